"""Journal checkpoints: the durable catalog tables as of one journal sequence number
(DESIGN.md §20.3).

A checkpoint is an SQLite database holding a copy of every durable table
(:data:`davbackup.journal_capture.DURABLE_TABLES`; rowid tables with their rowid in
the column ``journal_rowid``) and a one-row table ``checkpoint_info(seq, head, schema,
created)`` (``head``: the hash of record ``seq``). It is made from one read transaction of the catalog, so it is exactly the
state after journal record ``seq``. Its file is cut into parts of at most
:data:`PART_SIZE` bytes, each sealed as a blob of type 3 in a pack of its own; the
blob ID is ``seq (8 bytes BE) || checkpoint id (8 random bytes) || part number (4 BE)
|| last-part flag (1) || 11 zero bytes``. A checkpoint counts only when all its parts,
up to the one flagged last, are present and verify.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from davbackup import clock
from davbackup.catalog import Catalog, read_meta, write_meta
from davbackup.journal import GENESIS, TYPE_CHECKPOINT, seal_blob
from davbackup.journal_capture import DURABLE_TABLES, META_FILTER, table_shapes
from davbackup.storage import PackStorage

PART_SIZE = 4 * 1024 * 1024
ROWID_COLUMN = "journal_rowid"


def part_id(seq: int, checkpoint_id: bytes, part: int, last: bool) -> bytes:
    return struct.pack(">Q8sIB11x", seq, checkpoint_id, part, int(last))


def parse_part_id(blob_id: bytes) -> tuple[int, bytes, int, bool]:
    seq, cid, part, last = struct.unpack(">Q8sIB11x", blob_id)
    return seq, cid, part, bool(last)


@dataclass(frozen=True)
class CheckpointInfo:
    seq: int
    checkpoint_id: bytes
    pack: str
    parts: int
    size: int


def dump_tables(catalog_path: Path, out: Path) -> int:
    """Copy the durable tables of the catalog into a new SQLite file ``out`` from one
    read transaction; returns the journal sequence number of that state."""
    conn = sqlite3.connect(catalog_path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("ATTACH ? AS cp", (str(out),))
        conn.execute("PRAGMA cp.journal_mode=OFF")
        conn.execute("PRAGMA cp.synchronous=OFF")
        conn.execute("BEGIN")
        seq = int(read_meta(conn, "journal_seq") or 0)  # (main's meta: cp has none yet)
        head_hex = read_meta(conn, "journal_head")
        head = bytes.fromhex(head_hex) if head_hex else GENESIS
        schema = int(read_meta(conn, "schema_version") or 0)
        for table, shape in table_shapes(conn).items():
            where = f" WHERE {META_FILTER}" if table == "meta" else ""
            rowid = f"rowid AS {ROWID_COLUMN}, " if shape.by_rowid else ""
            conn.execute(f"CREATE TABLE cp.{table} AS SELECT {rowid}* FROM main.{table}{where}")
        conn.execute("CREATE TABLE cp.checkpoint_info(seq INTEGER, head BLOB, schema INTEGER, created REAL)")
        conn.execute("INSERT INTO cp.checkpoint_info VALUES (?, ?, ?, ?)", (seq, head, schema, clock.now()))
        conn.execute("COMMIT")
        conn.execute("DETACH cp")
    finally:
        conn.close()
    return seq


def _parts(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            data = f.read(PART_SIZE)
            if not data:
                return
            yield data


def write_checkpoint(catalog: Catalog, storage: PackStorage, key: bytes) -> CheckpointInfo:
    """Write a checkpoint of the catalog's current state to a new pack, sync it, and
    record it in ``meta.journal_checkpoint``. Older journal records stay until gc
    compacts them (:func:`compact`)."""
    scratch = Path(tempfile.gettempdir()) if catalog.shared else catalog.path.parent
    tmp = scratch / f"checkpoint-{secrets.token_hex(8)}.tmp"
    name = secrets.token_hex(16)
    checkpoint_id = secrets.token_bytes(8)
    try:
        if catalog.shared:  # PostgreSQL (davbackup/journal_pg.py)
            from davbackup.journal_pg import dump_tables as dump_pg

            seq = dump_pg(catalog, tmp)  # type: ignore[arg-type]
        else:
            seq = dump_tables(catalog.path, tmp)
        size = tmp.stat().st_size
        # The pack's row first: a pack file the catalog does not know is gc's debris.
        catalog.write(lambda conn: conn.execute(
            "INSERT INTO journal_packs(name, kind, first_seq, last_seq, created) VALUES (?, 'checkpoint', ?, ?, ?)",
            (name, seq, seq, clock.now())))
        appender = storage.create(name)
        parts = 0
        try:
            pending: bytes | None = None
            for data in _parts(tmp):
                if pending is not None:
                    appender.append(seal_blob(key, TYPE_CHECKPOINT, part_id(seq, checkpoint_id, parts, False), pending))
                    parts += 1
                pending = data
            assert pending is not None  # an SQLite file is never empty
            appender.append(seal_blob(key, TYPE_CHECKPOINT, part_id(seq, checkpoint_id, parts, True), pending))
            parts += 1
        finally:
            appender.close()  # syncs
    finally:
        tmp.unlink(missing_ok=True)
    info = CheckpointInfo(seq, checkpoint_id, name, parts, size)
    record = json.dumps({"seq": seq, "id": checkpoint_id.hex(), "pack": name, "parts": parts})
    catalog.write(lambda conn: write_meta(conn, "journal_checkpoint", record))
    return info


def has_checkpoint(catalog: Catalog) -> bool:
    return read_meta(catalog.reader(), "journal_checkpoint") is not None


def compact(catalog: Catalog, storage: PackStorage) -> int:
    """gc: delete journal packs whose records the newest checkpoint covers, and the
    packs of older checkpoints. Rows go first (in one transaction), then files;
    a process appending to a journal pack notices its row is gone and starts a new
    one. Returns the number of packs deleted."""
    value = read_meta(catalog.reader(), "journal_checkpoint")
    if value is None:
        return 0
    current = json.loads(value)

    def txn(conn: sqlite3.Connection) -> list[str]:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM journal_packs WHERE (kind='journal' AND last_seq <= ?)"
            " OR (kind='checkpoint' AND name <> ?)",
            (current["seq"], current["pack"]),
        )]
        conn.executemany("DELETE FROM journal_packs WHERE name=?", [(n,) for n in names])
        return names

    names = catalog.write(txn)
    for name in names:
        storage.delete(name)
    return len(names)


def load_into(conn: sqlite3.Connection, dump: Path) -> tuple[int, bytes | None]:
    """Recovery: copy a checkpoint's tables into the (empty) catalog behind ``conn``;
    returns its sequence number and the hash of that record."""
    conn.execute("ATTACH ? AS cp", (str(dump),))
    try:
        info = {r[1] for r in conn.execute("PRAGMA cp.table_info(checkpoint_info)")}
        seq, head = conn.execute(
            f"SELECT seq, {'head' if 'head' in info else 'NULL'} FROM cp.checkpoint_info").fetchone()
        shapes = table_shapes(conn)
        for table in DURABLE_TABLES:
            shape = shapes[table]
            have = {r[1] for r in conn.execute(f"PRAGMA cp.table_info({table})")}
            cols = [c for c in shape.columns if c != "rowid" and c in have]
            target = ", ".join((["rowid"] if shape.by_rowid else []) + cols)
            source = ", ".join(([ROWID_COLUMN] if shape.by_rowid else []) + cols)
            where = f" WHERE {META_FILTER}" if table == "meta" else ""
            conn.execute(f"INSERT OR REPLACE INTO main.{table}({target}) SELECT {source} FROM cp.{table}{where}")
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")
        conn.execute("DETACH cp")
    return int(seq), (bytes(head) if head is not None else None)


def journal_pack_names(repo_catalog: Catalog, catalog_url: str | None = None) -> set[str]:
    """The packs of the journal (checkpoints too)."""
    return {r[0] for r in repo_catalog.reader().execute("SELECT name FROM journal_packs")}
