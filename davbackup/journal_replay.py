"""The metadata journal as `davbackup recover` finds it in the packs (DESIGN.md §20.5).

The recovery (davbackup/maintenance/recover.py) walks every pack once; what it finds
of the journal, records (type 2) and checkpoint parts (type 3), is noted here in
scratch tables of the connection building the new catalog, with the packs that hold
them. This module then lists the checkpoints found, hands out the records after one
in sequence order, applies a record to the catalog's tables, and sets the journal's
place in the result: ``meta.journal_seq``, ``journal_head`` and ``journal_checkpoint``
(the keys of davbackup/journal.py and checkpoint.py) and the ``journal_packs`` rows.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterator, Sequence

from davbackup.catalog import write_meta
from davbackup.journal import decode_value

#: ``(seq, tag, pack, offset, length)`` of a journal record blob
FoundRecord = tuple[int, bytes, str, int, int]
#: ``(seq, checkpoint id, part, last, pack, offset, length)`` of a checkpoint part blob
FoundPart = tuple[int, bytes, int, int, str, int, int]
#: ``(part, last, pack, offset, length)`` of one part of a checkpoint, in order
CheckpointPart = tuple[int, int, str, int, int]

_FOUND = (
    "CREATE TEMP TABLE found_records(seq INTEGER, tag BLOB, pack TEXT, offset INTEGER, length INTEGER)",
    "CREATE INDEX temp.found_records_by_seq ON found_records(seq)",
    "CREATE TEMP TABLE found_parts(seq INTEGER, cid BLOB, part INTEGER, last INTEGER, pack TEXT, offset INTEGER,"
    " length INTEGER)",
    "CREATE TEMP TABLE found_packs(name TEXT PRIMARY KEY, kind TEXT, first_seq INTEGER, last_seq INTEGER)",
)


def begin_found(conn: sqlite3.Connection) -> None:
    """Create the scratch tables of a scan on ``conn``."""
    for statement in _FOUND:
        conn.execute(statement)


def found_in_pack(conn: sqlite3.Connection, name: str, records: Sequence[FoundRecord],
                  parts: Sequence[FoundPart]) -> bool:
    """Note the journal blobs found in one pack; whether there were any (the pack is
    then one of the journal's, a ``journal`` pack if it holds records, else a
    ``checkpoint`` pack)."""
    conn.executemany("INSERT INTO temp.found_records VALUES (?, ?, ?, ?, ?)", records)
    conn.executemany("INSERT INTO temp.found_parts VALUES (?, ?, ?, ?, ?, ?, ?)", parts)
    if not records and not parts:
        return False
    seqs = [r[0] for r in records] + [p[0] for p in parts]
    kind = "journal" if records else "checkpoint"
    conn.execute("INSERT INTO temp.found_packs VALUES (?, ?, ?, ?)", (name, kind, min(seqs), max(seqs)))
    return True


# -- checkpoints ---------------------------------------------------------------------


def checkpoint_candidates(conn: sqlite3.Connection) -> list[tuple[int, bytes, int, int, int]]:
    """Every checkpoint found, newest first: ``(seq, checkpoint id, parts found,
    highest part number, parts flagged last)``."""
    return conn.execute(
        "SELECT seq, cid, count(*), max(part), sum(last) FROM temp.found_parts GROUP BY seq, cid ORDER BY seq DESC"
    ).fetchall()


def checkpoint_parts(conn: sqlite3.Connection, seq: int, checkpoint_id: bytes) -> list[CheckpointPart]:
    return conn.execute(
        "SELECT part, last, pack, offset, length FROM temp.found_parts WHERE seq=? AND cid=? ORDER BY part",
        (seq, checkpoint_id),
    ).fetchall()


def keep_checkpoint(conn: sqlite3.Connection, seq: int, checkpoint_id: bytes, pack: str, parts: int) -> None:
    """The checkpoint loaded stays the catalog's current one (``meta.journal_checkpoint``,
    as davbackup/checkpoint.py records it)."""
    record = json.dumps({"seq": seq, "id": checkpoint_id.hex(), "pack": pack, "parts": parts})
    write_meta(conn, "journal_checkpoint", record)


# -- records -------------------------------------------------------------------------


def count_records_after(conn: sqlite3.Connection, start: int) -> int:
    """How many sequence numbers after ``start`` have a record."""
    return int(conn.execute("SELECT count(DISTINCT seq) FROM temp.found_records WHERE seq > ?", (start,)).fetchone()[0])


def records_after(conn: sqlite3.Connection, start: int) -> Iterator[tuple[int, list[FoundRecord]]]:
    """The records after ``start`` in order, grouped by sequence number (several
    records of one number: copies, or a failed transaction's and its successor's). The
    query runs at once, on a cursor of its own: ``conn`` may write while this is read."""
    cursor = conn.cursor()
    cursor.execute("SELECT seq, tag, pack, offset, length FROM temp.found_records WHERE seq > ? ORDER BY seq",
                   (start,))
    return _by_seq(cursor)


def _by_seq(cursor: sqlite3.Cursor) -> Iterator[tuple[int, list[FoundRecord]]]:
    group: list[FoundRecord] = []
    for row in cursor:
        if group and row[0] != group[0][0]:
            yield group[0][0], group
            group = []
        group.append(row)
    if group:
        yield group[0][0], group


def apply(conn: sqlite3.Connection, doc: dict[str, Any]) -> None:
    """Apply one decoded journal record (davbackup/journal.py's format) to the catalog:
    each ``put`` replaces a row, each ``del`` deletes one by its key; the schema
    version is the new catalog's own."""
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


def set_position(conn: sqlite3.Connection, seq: int, head: bytes | None) -> None:
    """The journal goes on after record ``seq``, whose hash is ``head`` (None: left as is)."""
    if head is not None:
        write_meta(conn, "journal_head", head.hex())
    write_meta(conn, "journal_seq", str(seq))


def register_found_packs(conn: sqlite3.Connection, now: float) -> None:
    """The journal's packs found by the scan into ``journal_packs``."""
    conn.execute("INSERT INTO journal_packs(name, kind, first_seq, last_seq, created)"
                 " SELECT name, kind, first_seq, last_seq, ? FROM temp.found_packs", (now,))
