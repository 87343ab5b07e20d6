"""`davbackup recover`: rebuild a lost or damaged catalog from the packs (DESIGN.md §20.5).

1. Walk every pack once, front to back: each journal record (type 2) and checkpoint
   part (type 3) is noted in a scratch table of the new catalog, and each chunk blob
   (type 1) whose authentication tag verifies goes, in batches, into a scratch table
   for the chunk index (nothing per pack or per file is kept in memory).
2. Load the newest complete checkpoint (parts reassembled into a temporary SQLite
   file, verified part by part) into the fresh catalog.
3. Replay every journal record after the checkpoint's sequence number in order; a
   record of a sequence number seen before with the same hash is a duplicate.
4. Fill the chunk index and pack list from the scratch table in key order, register
   the journal packs, and only then build the catalog's secondary indexes (each one
   sort, instead of random inserts into them all along); the checkpoint loaded stays
   current (without one, opening the result writes one).
5. Report what was rebuilt and what could not be placed.

Locks and unfinished upload sessions are not in the journal and are lost.
Memory stays flat in the number of files: blobs and records are read one at a time,
scratch rows go to SQLite in batches, and SQLite's page cache is bounded.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import blake3

from davbackup import crypto
from davbackup.catalog import Catalog
from davbackup.checkpoint import load_into, parse_part_id
from davbackup.errors import UsageError
from davbackup.journal import TYPE_CHECKPOINT, TYPE_JOURNAL, decode_value, open_blob, parse_record_id
from davbackup.pack import HEADER_SIZE, PACK_MAGIC, TYPE_DATA, BlobError, BlobHeader
from davbackup.storage import PackMissing
from davbackup.tree import TRASH

Progress = Callable[[str], None]


@dataclass
class RecoverReport:
    packs: int = 0
    records: int = 0
    records_applied: int = 0
    checkpoint_seq: int | None = None
    checkpoint_head: bytes | None = None
    superseded: int = 0
    last_seq: int = 0
    users: int = 0
    files: int = 0
    folders: int = 0
    versions: int = 0
    history_states: int = 0
    live_bytes: int = 0
    chunks: int = 0
    damaged_chunks: int = 0
    moved_aside: Path | None = None
    problems: list[str] = field(default_factory=list)


SCRATCH = """
CREATE TEMP TABLE found_records(seq INTEGER, tag BLOB, pack TEXT, offset INTEGER, length INTEGER);
CREATE INDEX temp.found_records_by_seq ON found_records(seq);
CREATE TEMP TABLE found_parts(seq INTEGER, cid BLOB, part INTEGER, last INTEGER, pack TEXT, offset INTEGER,
                              length INTEGER);
CREATE TEMP TABLE found_packs(name TEXT PRIMARY KEY, kind TEXT, first_seq INTEGER, last_seq INTEGER);
CREATE TEMP TABLE found_data_packs(n INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TEMP TABLE found_chunks(id BLOB, pack INTEGER, offset INTEGER, stored_len INTEGER, plain_len INTEGER);
"""
#: scratch rows kept in memory before they go to SQLite
BATCH = 20000
#: the recovery connection's page cache (KiB): bounded, whatever the repository's size
CACHE_KIB = 16384


def catalog_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def recover(root: Path, storage: object, keys: object, *, force: bool, progress: Progress,
            open_repo: Callable[[Path], object]) -> RecoverReport:
    """Rebuild ``root/catalog.sqlite``. ``open_repo(catalog_path)`` opens the repository
    in admin mode on the catalog built (for the summary, and a checkpoint if none was
    found)."""
    target = root / "catalog.sqlite"
    if any(p.exists() for p in catalog_files(target)) and not force:
        raise UsageError(f"{target} exists; recover never overwrites a catalog unless --force is given"
                         " (the old one is then moved aside)")
    report = RecoverReport()
    work = root / f"catalog.recovering-{secrets.token_hex(4)}.sqlite"
    Catalog(work, create=True).close()
    try:
        conn = sqlite3.connect(work, isolation_level=None)
        try:
            # A scratch file until it is renamed into place: no fsync, and the rollback
            # journal (needed if a checkpoint fails to load) in memory: small, as the
            # load only appends pages to an empty file.
            conn.execute("PRAGMA journal_mode=MEMORY")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            conn.execute("PRAGMA temp_store=FILE")
            for statement in SCRATCH.split(";"):
                if statement.strip():
                    conn.execute(statement)
            indexes = _drop_indexes(conn)
            key = keys.journal_key()  # type: ignore[attr-defined]
            _scan(conn, storage, keys, report, progress)
            _load_checkpoint(conn, storage, key, root, report, progress)
            _replay(conn, storage, key, report, progress)
            progress(f"indexing {report.chunks} chunks and the catalog")
            _index_chunks(conn)
            conn.execute("INSERT INTO journal_packs(name, kind, first_seq, last_seq, created)"
                         " SELECT name, kind, first_seq, last_seq, ? FROM temp.found_packs", (time.time(),))
            for sql in indexes:
                conn.execute(sql)
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        repo = open_repo(work)
        try:
            _summarize(repo.catalog.reader(), report)  # type: ignore[attr-defined]
        finally:
            repo.close()  # type: ignore[attr-defined]
        if any(p.exists() for p in catalog_files(target)):
            aside = root / f"catalog.sqlite.before-recover-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            for src, dst in zip(catalog_files(target), catalog_files(aside)):
                if src.exists():
                    os.replace(src, dst)
            report.moved_aside = aside
        for src, dst in zip(catalog_files(work), catalog_files(target)):
            if src.exists():
                os.replace(src, dst)
    finally:
        for p in catalog_files(work):
            p.unlink(missing_ok=True)
    return report


def _drop_indexes(conn: sqlite3.Connection) -> list[str]:
    """Drop the catalog's secondary indexes for the bulk load; returns their SQL.
    (Primary keys and UNIQUE constraints stay: the replay's keys rely on them.)"""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL").fetchall()
    for name, _sql in rows:
        conn.execute(f"DROP INDEX {name}")
    return [sql for _name, sql in rows]


class _ChunkVerifier:
    """Checks a chunk blob's authentication tag (header and ciphertext as written) the
    way a read does, without decompressing or re-hashing it (`check --read-data` does
    that)."""

    def __init__(self, keys: object) -> None:
        self._subkey_base = keys.chunk_subkey_base()  # type: ignore[attr-defined]

    def ok(self, header: BlobHeader, body: bytes) -> bool:
        try:
            crypto.open_sealed(crypto.keyed_hash(self._subkey_base, header.chunk_id), header.nonce, body, header.raw)
        except crypto.DecryptionFailed:
            return False
        return True


def _walk(stream: BinaryIO) -> Iterator[tuple[int, BlobHeader | None, bytes]]:
    """``(offset, header, body)`` of each blob of a pack, read front to back; a torn
    tail ends the walk, a damaged header is ``(offset, None, b"")`` and ends it too
    (like :func:`davbackup.pack.scan_pack`, which says nothing of it)."""
    magic = stream.read(len(PACK_MAGIC))
    if magic != PACK_MAGIC:
        if len(magic) < len(PACK_MAGIC) and PACK_MAGIC.startswith(magic):
            return  # the magic itself was torn: an empty pack
        raise BlobError("not a pack file")
    offset = len(PACK_MAGIC)
    while True:
        raw = stream.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            return
        try:
            header = BlobHeader.parse(raw)
        except BlobError:
            if raw.count(0) != len(raw):  # (zeros: bytes a failed fsync lost, a torn tail)
                yield offset, None, b""
            return
        body = stream.read(header.stored_len)
        if len(body) < header.stored_len:
            return
        yield offset, header, body
        offset += HEADER_SIZE + header.stored_len


def _scan(conn: sqlite3.Connection, storage: object, keys: object, report: RecoverReport,
          progress: Progress) -> None:
    """One pass over every pack: journal records, checkpoint parts and verified chunk
    blobs go to the scratch tables."""
    names = list(storage.names())  # type: ignore[attr-defined]
    progress(f"scanning {len(names)} packs for chunks, journal records and checkpoints")
    verifier = _ChunkVerifier(keys)
    chunks: list[tuple[bytes, int, int, int, int]] = []
    for i, name in enumerate(names, 1):
        report.packs += 1
        records: list[tuple[int, bytes, str, int, int]] = []
        parts: list[tuple[int, bytes, int, int, str, int, int]] = []
        damaged = 0
        pack_no = conn.execute("INSERT INTO temp.found_data_packs(name) VALUES (?)", (name,)).lastrowid
        try:
            with storage.open_stream(name) as stream:  # type: ignore[attr-defined]
                for offset, h, body in _walk(stream):
                    if h is None:
                        report.problems.append(f"pack {name}: damaged blob header at offset {offset};"
                                               " the rest of the pack was not read")
                    elif h.blob_type == TYPE_DATA:
                        if verifier.ok(h, body):
                            chunks.append((h.chunk_id, pack_no, offset, h.stored_len, h.plain_len))
                        else:
                            damaged += 1
                    elif h.blob_type == TYPE_JOURNAL:
                        seq, tag = parse_record_id(h.chunk_id)
                        records.append((seq, tag, name, offset, HEADER_SIZE + h.stored_len))
                    elif h.blob_type == TYPE_CHECKPOINT:
                        seq, cid, part, last = parse_part_id(h.chunk_id)
                        parts.append((seq, cid, part, int(last), name, offset, HEADER_SIZE + h.stored_len))
                    if len(chunks) >= BATCH:
                        conn.executemany("INSERT INTO temp.found_chunks VALUES (?, ?, ?, ?, ?)", chunks)
                        report.chunks += len(chunks)
                        chunks.clear()
        except (BlobError, PackMissing, OSError) as exc:
            report.problems.append(f"pack {name}: cannot be scanned ({exc})")
        if damaged:
            report.damaged_chunks += damaged
            report.problems.append(f"pack {name}: {damaged} damaged chunk blobs were not indexed")
        conn.executemany("INSERT INTO temp.found_records VALUES (?, ?, ?, ?, ?)", records)
        conn.executemany("INSERT INTO temp.found_parts VALUES (?, ?, ?, ?, ?, ?, ?)", parts)
        report.records += len(records)
        if records or parts:
            seqs = [r[0] for r in records] + [p[0] for p in parts]
            kind = "journal" if records else "checkpoint"
            conn.execute("INSERT INTO temp.found_packs VALUES (?, ?, ?, ?)", (name, kind, min(seqs), max(seqs)))
        if i % 100 == 0:
            progress(f"  {i}/{len(names)} packs scanned")
    conn.executemany("INSERT INTO temp.found_chunks VALUES (?, ?, ?, ?, ?)", chunks)
    report.chunks += len(chunks)


def _index_chunks(conn: sqlite3.Connection) -> None:
    """The chunk index and pack list from the scan, in key order (a sort, then
    appends). The journal's own packs hold no chunks and are not data packs; of two
    copies of one chunk the one in the pack scanned first is kept."""
    now = time.time()
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO packs(name, state, created) SELECT name, 'sealed', ? FROM temp.found_data_packs d"
        " WHERE name NOT IN (SELECT name FROM temp.found_packs) ORDER BY n", (now,))
    conn.execute(
        "INSERT OR IGNORE INTO chunks(id, pack_id, offset, stored_len, plain_len, touched)"
        " SELECT c.id, p.id, c.offset, c.stored_len, c.plain_len, ? FROM temp.found_chunks c"
        " JOIN temp.found_data_packs d ON d.n = c.pack JOIN packs p ON p.name = d.name"
        " ORDER BY c.id, c.pack", (now,))
    conn.execute("COMMIT")
    conn.execute("DROP TABLE temp.found_chunks")


def _load_checkpoint(conn: sqlite3.Connection, storage: object, key: bytes, root: Path,
                     report: RecoverReport, progress: Progress) -> None:
    """The newest checkpoint whose parts are all there and verify."""
    candidates = conn.execute(
        "SELECT seq, cid, count(*), max(part), sum(last) FROM temp.found_parts GROUP BY seq, cid ORDER BY seq DESC"
    ).fetchall()
    for seq, cid, count, top, lasts in candidates:
        if count != top + 1 or lasts != 1:
            report.problems.append(f"checkpoint at record {seq} is incomplete ({count} parts found); skipped")
            continue
        rows = conn.execute(
            "SELECT part, last, pack, offset, length FROM temp.found_parts WHERE seq=? AND cid=? ORDER BY part",
            (seq, cid),
        ).fetchall()
        if rows[-1][1] != 1:
            report.problems.append(f"checkpoint at record {seq}: its last part is not the highest; skipped")
            continue
        dump = root / f"checkpoint-recover-{secrets.token_hex(4)}.tmp"
        try:
            with open(dump, "wb") as out:
                for _part, _last, pack, offset, length in rows:
                    _h, data = open_blob(key, storage.read(pack, offset, length), TYPE_CHECKPOINT)  # type: ignore
                    out.write(data)
            progress(f"loading the checkpoint at journal record {seq} ({dump.stat().st_size} bytes)")
            conn.execute("BEGIN")
            got, head = load_into(conn, dump)
            report.checkpoint_head = head
            if got != seq:
                raise BlobError(f"checkpoint says record {got}, its blobs say {seq}")
            report.checkpoint_seq = seq
            packs = {r[2] for r in rows}
            if len(packs) == 1:  # as written by davbackup: it stays the current checkpoint
                record = json.dumps({"seq": seq, "id": cid.hex(), "pack": rows[0][2], "parts": len(rows)})
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('journal_checkpoint', ?)", (record,))
            return
        except (BlobError, PackMissing, EOFError, OSError, sqlite3.DatabaseError) as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            report.problems.append(f"checkpoint at record {seq} cannot be read ({exc}); trying an older one")
        finally:
            dump.unlink(missing_ok=True)
    report.problems.append("no complete checkpoint found: replaying the journal from its start")


def _replay(conn: sqlite3.Connection, storage: object, key: bytes, report: RecoverReport,
            progress: Progress) -> None:
    """Apply the records after the checkpoint in order. Several records with one
    sequence number are copies of one record (outbox records synced twice) or the
    record of a transaction that failed to commit, left behind by the writer, and the
    committed one written after it: the one that continues the hash chain wins, and
    among those the one of the later epoch (DESIGN.md §20.2)."""
    start = report.checkpoint_seq or 0
    total = conn.execute("SELECT count(DISTINCT seq) FROM temp.found_records WHERE seq > ?", (start,)).fetchone()[0]
    progress(f"replaying {total} journal records after record {start}")
    prev_digest: bytes | None = report.checkpoint_head
    last_applied = start
    cursor = conn.cursor()
    cursor.execute("SELECT seq, tag, pack, offset, length FROM temp.found_records WHERE seq > ? ORDER BY seq",
                   (start,))
    conn.execute("BEGIN")
    done = 0
    for seq, group in _by_seq(cursor):
        candidates: dict[bytes, dict] = {}  # type: ignore[type-arg]
        for _seq, tag, pack, offset, length in group:
            try:
                _h, payload = open_blob(key, storage.read(pack, offset, length), TYPE_JOURNAL)  # type: ignore
            except (BlobError, PackMissing, EOFError, OSError) as exc:
                report.problems.append(f"journal record {seq} in pack {pack} cannot be read ({exc})")
                continue
            digest = blake3.blake3(payload).digest()
            if digest[:24] != tag:
                report.problems.append(f"journal record {seq} in pack {pack} does not match its header; skipped")
                continue
            candidates[digest] = json.loads(payload)
        if not candidates:
            continue
        if seq > last_applied + 1:
            report.problems.append(
                f"journal records {last_applied + 1}..{seq - 1} are missing (lost or damaged journal packs)"
            )
        following = [d for d, doc in candidates.items() if prev_digest is not None
                     and bytes.fromhex(doc["prev"]) == prev_digest]
        if prev_digest is not None and not following and seq == last_applied + 1:
            report.problems.append(f"journal record {seq} does not follow record {seq - 1} (hash chain broken)")
        pool = following or list(candidates)
        chosen = max(pool, key=lambda d: candidates[d].get("epoch", 0))
        report.superseded += len(candidates) - 1
        _apply(conn, candidates[chosen])
        report.records_applied += 1
        prev_digest = chosen
        last_applied = seq
        done += 1
        if done % 10000 == 0:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            progress(f"  {done}/{total} records replayed")
    if prev_digest is not None and last_applied > start:
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('journal_head', ?)", (prev_digest.hex(),))
    elif report.checkpoint_head is not None:
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('journal_head', ?)",
                     (report.checkpoint_head.hex(),))
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('journal_seq', ?)", (str(last_applied),))
    conn.execute("COMMIT")
    report.last_seq = last_applied


def _by_seq(cursor: sqlite3.Cursor) -> Iterator[tuple[int, list[tuple]]]:  # type: ignore[type-arg]
    group: list[tuple] = []  # type: ignore[type-arg]
    for row in cursor:
        if group and row[0] != group[0][0]:
            yield group[0][0], group
            group = []
        group.append(row)
    if group:
        yield group[0][0], group


def _apply(conn: sqlite3.Connection, doc: dict) -> None:  # type: ignore[type-arg]
    tables = doc["tables"]
    for table, op, values in doc["ops"]:
        shape = tables[table]
        vals = [decode_value(v) for v in values]
        if op == "put":
            cols = shape["columns"]
            if table == "meta" and vals[0] in ("schema_version",):
                continue
            conn.execute(
                f"INSERT OR REPLACE INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals
            )
        elif op == "del":
            where = " AND ".join(f"{c}=?" for c in shape["key"])
            conn.execute(f"DELETE FROM {table} WHERE {where}", vals)


def _summarize(conn: sqlite3.Connection, report: RecoverReport) -> None:
    report.chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    report.users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    report.files = conn.execute("SELECT count(*) FROM nodes WHERE is_dir=0").fetchone()[0]
    report.folders = conn.execute(
        "SELECT count(*) FROM nodes WHERE is_dir=1 AND parent_id IS NOT NULL AND parent_id < ?", (TRASH,)
    ).fetchone()[0]
    report.versions = conn.execute("SELECT count(*) FROM versions").fetchone()[0]
    report.history_states = conn.execute("SELECT count(*) FROM node_history").fetchone()[0]
    report.live_bytes = conn.execute(
        "SELECT coalesce(sum(v.size), 0) FROM nodes n JOIN versions v ON v.id = n.version_id"
    ).fetchone()[0]
    # (a detached tree's top has no parent row; the server's start finishes it, §19)
    orphans = conn.execute(
        "SELECT count(*) FROM nodes n WHERE n.parent_id IS NOT NULL AND n.parent_id < ?"
        " AND NOT EXISTS (SELECT 1 FROM nodes p WHERE p.id = n.parent_id)", (TRASH,)
    ).fetchone()[0]
    if orphans:
        report.problems.append(f"{orphans} files or folders whose folder is missing (not reachable)")
    rootless = conn.execute(
        "SELECT name FROM users u WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = u.root_id)"
    ).fetchall()
    for (name,) in rootless:
        report.problems.append(f"user {name}: root folder missing")
    missing = conn.execute(
        "SELECT count(DISTINCT v.id) FROM versions v JOIN version_chunks vc ON vc.version_id = v.id"
        " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = vc.chunk_id)"
    ).fetchone()[0]
    if missing:
        report.problems.append(f"{missing} file versions need chunks found in no pack (unreadable)")
