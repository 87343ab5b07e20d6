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
from typing import TYPE_CHECKING, Any, Callable

import blake3

from davbackup import chunk_index, crypto, journal_replay, tree_scan, users, versions
from davbackup.catalog import Catalog
from davbackup.checkpoint import load_into, parse_part_id
from davbackup.errors import UsageError
from davbackup.journal import TYPE_CHECKPOINT, TYPE_JOURNAL, open_blob, parse_record_id
from davbackup.journal_replay import FoundPart, FoundRecord
from davbackup.keys import MasterKeys
from davbackup.pack import TYPE_DATA, BlobError, BlobHeader, open_body, scan_pack
from davbackup.storage import PackMissing, PackStorage

if TYPE_CHECKING:
    from davbackup.repository import Repository

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


#: scratch rows kept in memory before they go to SQLite
BATCH = 20000
#: the recovery connection's page cache (KiB): bounded, whatever the repository's size
CACHE_KIB = 16384


def catalog_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def recover(root: Path, storage: PackStorage, keys: MasterKeys, *, force: bool, progress: Progress,
            open_repo: Callable[[Path], Repository]) -> RecoverReport:
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
        _rebuild(work, root, storage, keys, report, progress)
        repo = open_repo(work)
        try:
            _summarize(repo.catalog.reader(), report)
        finally:
            repo.close()
        if any(p.exists() for p in catalog_files(target)):
            aside = root / f"catalog.sqlite.before-recover-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            _rename_catalog(target, aside)
            report.moved_aside = aside
        _rename_catalog(work, target)
    finally:
        for p in catalog_files(work):
            p.unlink(missing_ok=True)
    return report


def _rename_catalog(src: Path, dst: Path) -> None:
    """Rename a catalog with its WAL and shared-memory files (those that exist)."""
    for a, b in zip(catalog_files(src), catalog_files(dst), strict=True):
        if a.exists():
            os.replace(a, b)


def _rebuild(work: Path, root: Path, storage: PackStorage, keys: MasterKeys, report: RecoverReport,
             progress: Progress) -> None:
    """Steps 1 to 4 on the new, empty catalog ``work``."""
    conn = sqlite3.connect(work, isolation_level=None)
    try:
        # A scratch file until it is renamed into place: no fsync, and the rollback
        # journal (needed if a checkpoint fails to load) in memory: small, as the
        # load only appends pages to an empty file.
        conn.execute("PRAGMA journal_mode=MEMORY")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute("PRAGMA temp_store=FILE")
        journal_replay.begin_found(conn)
        chunk_index.begin_found(conn)
        indexes = _drop_indexes(conn)
        key = keys.journal_key()
        _scan(conn, storage, keys, report, progress)
        _load_checkpoint(conn, storage, key, root, report, progress)
        _replay(conn, storage, key, report, progress)
        progress(f"indexing {report.chunks} chunks and the catalog")
        now = time.time()
        chunk_index.index_found(conn, now)
        journal_replay.register_found_packs(conn, now)
        for sql in indexes:
            conn.execute(sql)
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def _drop_indexes(conn: sqlite3.Connection) -> list[str]:
    """Drop the catalog's secondary indexes for the bulk load; returns their SQL.
    (Primary keys and UNIQUE constraints stay: the replay's keys rely on them.)"""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL").fetchall()
    for name, _sql in rows:
        conn.execute(f"DROP INDEX {name}")
    return [str(sql) for _name, sql in rows]


class _ChunkVerifier:
    """Checks a chunk blob's authentication tag (header and ciphertext as written) the
    way a read does, without decompressing or re-hashing it (`check --read-data` does
    that)."""

    def __init__(self, keys: MasterKeys) -> None:
        self._subkey_base = keys.chunk_subkey_base()

    def ok(self, header: BlobHeader, body: bytes) -> bool:
        try:
            open_body(crypto.keyed_hash(self._subkey_base, header.chunk_id), header, body)
        except BlobError:
            return False
        return True


def _scan(conn: sqlite3.Connection, storage: PackStorage, keys: MasterKeys, report: RecoverReport,
          progress: Progress) -> None:
    """One pass over every pack: journal records, checkpoint parts and verified chunk
    blobs go to the scratch tables."""
    names = list(storage.names())
    progress(f"scanning {len(names)} packs for chunks, journal records and checkpoints")
    verifier = _ChunkVerifier(keys)
    chunks: list[tuple[bytes, int, int, int, int]] = []
    for i, name in enumerate(names, 1):
        report.packs += 1
        records: list[FoundRecord] = []
        parts: list[FoundPart] = []
        damaged = 0
        pack_no = chunk_index.found_pack(conn, name)

        def damaged_header(offset: int, name: str = name) -> None:
            report.problems.append(f"pack {name}: damaged blob header at offset {offset};"
                                   " the rest of the pack was not read")

        try:
            with storage.open_stream(name) as stream:
                for blob in scan_pack(stream, bodies=True, on_damage=damaged_header):
                    h, offset = blob.header, blob.offset
                    if h.blob_type == TYPE_DATA:
                        if verifier.ok(h, blob.body or b""):
                            chunks.append((h.chunk_id, pack_no, offset, h.stored_len, h.plain_len))
                        else:
                            damaged += 1
                    elif h.blob_type == TYPE_JOURNAL:
                        seq, tag = parse_record_id(h.chunk_id)
                        records.append((seq, tag, name, offset, blob.total_len))
                    elif h.blob_type == TYPE_CHECKPOINT:
                        seq, cid, part, last = parse_part_id(h.chunk_id)
                        parts.append((seq, cid, part, int(last), name, offset, blob.total_len))
                    if len(chunks) >= BATCH:
                        chunk_index.found_chunks(conn, chunks)
                        report.chunks += len(chunks)
                        chunks.clear()
        except (BlobError, PackMissing, OSError) as exc:
            report.problems.append(f"pack {name}: cannot be scanned ({exc})")
        if damaged:
            report.damaged_chunks += damaged
            report.problems.append(f"pack {name}: {damaged} damaged chunk blobs were not indexed")
        report.records += len(records)
        if journal_replay.found_in_pack(conn, name, records, parts):
            chunk_index.found_metadata_pack(conn, pack_no)
        if i % 100 == 0:
            progress(f"  {i}/{len(names)} packs scanned")
    chunk_index.found_chunks(conn, chunks)
    report.chunks += len(chunks)


def _load_checkpoint(conn: sqlite3.Connection, storage: PackStorage, key: bytes, root: Path,
                     report: RecoverReport, progress: Progress) -> None:
    """The newest checkpoint whose parts are all there and verify."""
    for seq, cid, count, top, lasts in journal_replay.checkpoint_candidates(conn):
        if count != top + 1 or lasts != 1:
            report.problems.append(f"checkpoint at record {seq} is incomplete ({count} parts found); skipped")
            continue
        rows = journal_replay.checkpoint_parts(conn, seq, cid)
        if rows[-1][1] != 1:
            report.problems.append(f"checkpoint at record {seq}: its last part is not the highest; skipped")
            continue
        dump = root / f"checkpoint-recover-{secrets.token_hex(4)}.tmp"
        try:
            with open(dump, "wb") as out:
                for _part, _last, pack, offset, length in rows:
                    _h, data = open_blob(key, storage.read(pack, offset, length), TYPE_CHECKPOINT)
                    out.write(data)
            progress(f"loading the checkpoint at journal record {seq} ({dump.stat().st_size} bytes)")
            conn.execute("BEGIN")
            got, head = load_into(conn, dump)
            report.checkpoint_head = head
            if got != seq:
                raise BlobError(f"checkpoint says record {got}, its blobs say {seq}")
            report.checkpoint_seq = seq
            if len({r[2] for r in rows}) == 1:  # as written by davbackup: it stays the current checkpoint
                journal_replay.keep_checkpoint(conn, seq, cid, rows[0][2], len(rows))
            return
        except (BlobError, PackMissing, EOFError, OSError, sqlite3.DatabaseError) as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            report.problems.append(f"checkpoint at record {seq} cannot be read ({exc}); trying an older one")
        finally:
            dump.unlink(missing_ok=True)
    report.problems.append("no complete checkpoint found: replaying the journal from its start")


def _replay(conn: sqlite3.Connection, storage: PackStorage, key: bytes, report: RecoverReport,
            progress: Progress) -> None:
    """Apply the records after the checkpoint in order. Several records with one
    sequence number are copies of one record (outbox records synced twice) or the
    record of a transaction that failed to commit, left behind by the writer, and the
    committed one written after it: the one that continues the hash chain wins, and
    among those the one of the later epoch (DESIGN.md §20.2)."""
    start = report.checkpoint_seq or 0
    total = journal_replay.count_records_after(conn, start)
    progress(f"replaying {total} journal records after record {start}")
    prev_digest: bytes | None = report.checkpoint_head
    last_applied = start
    groups = journal_replay.records_after(conn, start)
    conn.execute("BEGIN")
    done = 0
    for seq, group in groups:
        candidates = _readable_records(storage, key, seq, group, report)
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
        journal_replay.apply(conn, candidates[chosen])
        report.records_applied += 1
        prev_digest = chosen
        last_applied = seq
        done += 1
        if done % 10000 == 0:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            progress(f"  {done}/{total} records replayed")
    # (prev_digest: the last record applied's hash, else the checkpoint's)
    journal_replay.set_position(conn, last_applied, prev_digest)
    conn.execute("COMMIT")
    report.last_seq = last_applied


def _readable_records(storage: PackStorage, key: bytes, seq: int, group: list[FoundRecord],
                      report: RecoverReport) -> dict[bytes, dict[str, Any]]:
    """The records of one sequence number that read and match their header, by hash."""
    candidates: dict[bytes, dict[str, Any]] = {}
    for _seq, tag, pack, offset, length in group:
        try:
            _h, payload = open_blob(key, storage.read(pack, offset, length), TYPE_JOURNAL)
        except (BlobError, PackMissing, EOFError, OSError) as exc:
            report.problems.append(f"journal record {seq} in pack {pack} cannot be read ({exc})")
            continue
        digest = blake3.blake3(payload).digest()
        if digest[:24] != tag:
            report.problems.append(f"journal record {seq} in pack {pack} does not match its header; skipped")
            continue
        candidates[digest] = json.loads(payload)
    return candidates


def _summarize(conn: sqlite3.Connection, report: RecoverReport) -> None:
    report.chunks = chunk_index.count(conn)
    report.users = users.count_users(conn)
    report.files = tree_scan.file_count(conn)
    report.folders = tree_scan.folder_count(conn)
    report.versions = versions.version_count(conn)
    report.history_states = tree_scan.history_state_count(conn)
    report.live_bytes = tree_scan.live_bytes(conn)
    # (a detached tree's top has no parent row; the server's start finishes it, §19)
    orphans = len(tree_scan.orphaned_nodes(conn))
    if orphans:
        report.problems.append(f"{orphans} files or folders whose folder is missing (not reachable)")
    for name in users.rootless(conn):
        report.problems.append(f"user {name}: root folder missing")
    missing = versions.versions_missing_chunks(conn)
    if missing:
        report.problems.append(f"{missing} file versions need chunks found in no pack (unreadable)")
