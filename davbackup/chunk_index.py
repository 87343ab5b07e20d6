"""The chunk index and the pack list in the catalog (DESIGN.md §5, §7.1, §8, §12).

This module is the only one that reads or writes the ``chunks``, ``packs`` and
``damaged_chunks`` tables; the chunk store (davbackup/chunkstore.py) and the
maintenance commands (gc, check, rebuild-index, recover, migrate, stats) call these functions.
Every function takes the connection it runs on: a write transaction from
:meth:`Catalog.write` where it changes rows, any read connection otherwise.

A chunk is live while a file version (the ``version_chunks`` view, davbackup/chunklists.py)
or an upload session (``session_chunks``, davbackup/uploads.py) references it; gc's
sweep is the one query here that reads those two tables.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable, Sequence

from davbackup.errors import IntegrityError

#: ``(chunk_id, pack_id, offset, stored_len, plain_len, touched)``, one row of the index
IndexRow = tuple[bytes, int, int, int, int, float]


# -- packs -------------------------------------------------------------------------


def add_pack(conn: sqlite3.Connection, name: str, state: str, created: float) -> int:
    """Register a pack (before its file exists: a file the catalog does not know is gc's debris)."""
    cur = conn.execute("INSERT INTO packs(name, state, created) VALUES (?, ?, ?)", (name, state, created))
    return int(cur.lastrowid)  # type: ignore[arg-type]


def seal_open_packs(conn: sqlite3.Connection) -> None:
    """Mark every pack still ``open`` sealed (at startup nothing is pending in any)."""
    conn.execute("UPDATE packs SET state='sealed' WHERE state='open'")


def seal_packs(conn: sqlite3.Connection, pack_ids: Iterable[int]) -> None:
    conn.executemany("UPDATE packs SET state='sealed' WHERE id=?", [(i,) for i in pack_ids])


def open_among(conn: sqlite3.Connection, pack_ids: Iterable[int]) -> set[int]:
    """Those of ``pack_ids`` that are still ``open``."""
    ids = list(pack_ids)
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT id FROM packs WHERE state='open' AND id IN ({marks})", ids).fetchall()
    return {int(r[0]) for r in rows}


def pack_name(conn: sqlite3.Connection, pack_id: int) -> str | None:
    row = conn.execute("SELECT name FROM packs WHERE id=?", (pack_id,)).fetchone()
    return None if row is None else str(row[0])


def packs(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """Every pack as ``(id, name)``, by ID."""
    return [(int(i), str(n)) for i, n in conn.execute("SELECT id, name FROM packs ORDER BY id").fetchall()]


def sealed_packs(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return [(int(i), str(n)) for i, n in conn.execute("SELECT id, name FROM packs WHERE state='sealed'").fetchall()]


def open_packs(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return [(int(i), str(n)) for i, n in conn.execute("SELECT id, name FROM packs WHERE state='open'").fetchall()]


def pack_names(conn: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT name FROM packs")}


def drop_pack_if_empty(conn: sqlite3.Connection, pack_id: int) -> bool:
    """Forget a pack no chunk lies in any more; False if one still does."""
    if conn.execute("SELECT 1 FROM chunks WHERE pack_id=? LIMIT 1", (pack_id,)).fetchone():
        return False
    conn.execute("DELETE FROM packs WHERE id=?", (pack_id,))
    return True


def live_bytes_by_pack(conn: sqlite3.Connection, header_size: int) -> dict[int, int]:
    """Bytes of indexed blobs (header included) per pack ID."""
    rows = conn.execute("SELECT pack_id, sum(stored_len + ?) FROM chunks GROUP BY pack_id", (header_size,))
    return {int(pid): int(total) for pid, total in rows.fetchall()}


def repoint(conn: sqlite3.Connection, old_pack_id: int, new_name: str, moved: Sequence[tuple[int, bytes, int]],
            created: float) -> bool:
    """gc's rewrite: register the new sealed pack, point ``moved`` chunks
    (``(new_offset, chunk_id, old_offset)``) at it, and forget the old pack if nothing
    is left in it (True)."""
    new_id = add_pack(conn, new_name, "sealed", created)
    conn.executemany(
        "UPDATE chunks SET pack_id=?, offset=? WHERE id=? AND pack_id=? AND offset=?",
        [(new_id, new_off, cid, old_pack_id, old_off) for new_off, cid, old_off in moved],
    )
    return drop_pack_if_empty(conn, old_pack_id)


# -- chunks ------------------------------------------------------------------------


#: chunk IDs asked about in one statement of :func:`lookup_dedup`
LOOKUP_BATCH = 256


def lookup_dedup(conn: sqlite3.Connection, chunk_ids: Sequence[bytes]) -> dict[bytes, bool]:
    """What a write needs to know of its chunks, one statement per :data:`LOOKUP_BATCH`:
    the indexed ones by ID, True if found damaged (a chunk not in the answer is not
    indexed; one indexed and not damaged is deduplicated)."""
    found: dict[bytes, bool] = {}
    for i in range(0, len(chunk_ids), LOOKUP_BATCH):
        part = chunk_ids[i : i + LOOKUP_BATCH]
        rows = conn.execute(
            "SELECT c.id, d.id IS NOT NULL FROM chunks c LEFT JOIN damaged_chunks d ON d.id = c.id"
            f" WHERE c.id IN ({','.join('?' * len(part))})",
            tuple(part),
        )
        found.update((bytes(r[0]), bool(r[1])) for r in rows.fetchall())
    return found


def locate_many(conn: sqlite3.Connection, chunk_ids: Sequence[bytes]) -> dict[bytes, tuple[int, int, int]]:
    """``locate`` for many chunks in one statement (those indexed, by ID)."""
    marks = ",".join("?" * len(chunk_ids))
    rows = conn.execute(f"SELECT id, pack_id, offset, stored_len FROM chunks WHERE id IN ({marks})", tuple(chunk_ids))
    return {bytes(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows.fetchall()}


def locate(conn: sqlite3.Connection, chunk_id: bytes) -> tuple[int, int, int] | None:
    """``(pack_id, offset, stored_len)`` of an indexed chunk."""
    row = conn.execute("SELECT pack_id, offset, stored_len FROM chunks WHERE id=?", (chunk_id,)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


def record(conn: sqlite3.Connection, new: Sequence[IndexRow], existing: Sequence[bytes], now: float) -> None:
    """Inside a write transaction: index new chunks, check deduplicated ones exist."""
    # A chunk already indexed here was found damaged: the fresh copy replaces it.
    conn.executemany(
        "INSERT INTO chunks(id, pack_id, offset, stored_len, plain_len, touched) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET pack_id=excluded.pack_id, offset=excluded.offset,"
        " stored_len=excluded.stored_len, touched=excluded.touched"
        " WHERE chunks.id IN (SELECT id FROM damaged_chunks)",
        new,
    )
    healed = [(row[0],) for row in new]
    conn.executemany("DELETE FROM damaged_chunks WHERE id=?", healed)
    for start in range(0, len(existing), 500):
        part = existing[start : start + 500]
        marks = ",".join("?" * len(part))
        cur = conn.execute(f"UPDATE chunks SET touched=? WHERE id IN ({marks})", (now, *part))
        if cur.rowcount != len(part):
            raise IntegrityError("a deduplicated chunk was removed by a concurrent gc; the upload must be retried")


def add_found(conn: sqlite3.Connection, pack_id: int, found: Iterable[IndexRow]) -> int:
    """rebuild-index: index chunks found in a pack unless indexed already; how many were added."""
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO chunks(id, pack_id, offset, stored_len, plain_len, touched) VALUES (?, ?, ?, ?, ?, ?)",
        [(cid, pack_id, off, slen, plen, touched) for cid, _pid, off, slen, plen, touched in found],
    )
    return conn.total_changes - before


def chunks_in_pack(conn: sqlite3.Connection, pack_id: int) -> list[tuple[bytes, int, int]]:
    """``(chunk_id, offset, stored_len)`` of the chunks indexed in a pack, by offset."""
    return conn.execute(
        "SELECT id, offset, stored_len FROM chunks WHERE pack_id=? ORDER BY offset", (pack_id,)
    ).fetchall()


def all_chunks(conn: sqlite3.Connection) -> list[tuple[bytes, int, int, int]]:
    """``(chunk_id, pack_id, offset, stored_len)`` of every indexed chunk, pack by pack."""
    return conn.execute("SELECT id, pack_id, offset, stored_len FROM chunks ORDER BY pack_id, offset").fetchall()


def delete_unreferenced(conn: sqlite3.Connection, touched_before: float) -> int:
    """gc: drop index rows of chunks no version and no upload session references and
    that nobody touched since ``touched_before``; how many went."""
    cur = conn.execute(
        "DELETE FROM chunks WHERE touched <= ?"
        " AND NOT EXISTS (SELECT 1 FROM version_chunks vc WHERE vc.chunk_id = chunks.id)"
        " AND NOT EXISTS (SELECT 1 FROM session_chunks sc WHERE sc.chunk_id = chunks.id)",
        (touched_before,),
    )
    return int(cur.rowcount)


def count(conn: sqlite3.Connection) -> int:
    """How many chunks are indexed."""
    return int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])


def totals(conn: sqlite3.Connection, header_size: int) -> tuple[int, int, int, int, int]:
    """For stats: (chunks, their plaintext bytes, their stored bytes with headers,
    plaintext bytes of the chunks some version references, packs)."""

    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0] or 0)

    return (
        count(conn),
        one("SELECT sum(plain_len) FROM chunks"),
        one(f"SELECT sum(stored_len + {int(header_size)}) FROM chunks"),
        one("SELECT sum(plain_len) FROM chunks WHERE id IN (SELECT chunk_id FROM version_chunks)"),
        one("SELECT count(*) FROM packs"),
    )


# -- damaged chunks (DESIGN.md §12.1) ------------------------------------------------


def mark_damaged(conn: sqlite3.Connection, chunk_id: bytes, found: float, reason: str) -> None:
    conn.execute("INSERT OR REPLACE INTO damaged_chunks(id, found, reason) VALUES (?, ?, ?)", (chunk_id, found, reason))


def damaged_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM damaged_chunks").fetchone()[0])


def forget_damage(conn: sqlite3.Connection) -> None:
    """check --read-data read every chunk back fine: earlier damage was healed."""
    conn.execute("DELETE FROM damaged_chunks")


# -- recover: the index rebuilt from a scan of every pack (DESIGN.md §20.5) -----------
#
# What the scan finds goes to two scratch tables of the connection first (in batches:
# nothing per chunk stays in memory), and into ``packs`` and ``chunks`` at the end in
# key order: one sort, then appends.

_FOUND = (
    "CREATE TEMP TABLE found_data_packs(n INTEGER PRIMARY KEY, name TEXT NOT NULL, metadata INTEGER NOT NULL DEFAULT 0)",
    "CREATE TEMP TABLE found_chunks(id BLOB, pack INTEGER, offset INTEGER, stored_len INTEGER, plain_len INTEGER)",
)


def begin_found(conn: sqlite3.Connection) -> None:
    """Create the scratch tables of a scan on ``conn``."""
    for statement in _FOUND:
        conn.execute(statement)


def found_pack(conn: sqlite3.Connection, name: str) -> int:
    """A pack about to be scanned; its number in the scan (for :func:`found_chunks`)."""
    return int(conn.execute("INSERT INTO temp.found_data_packs(name) VALUES (?)", (name,)).lastrowid)  # type: ignore[arg-type]


def found_metadata_pack(conn: sqlite3.Connection, pack_no: int) -> None:
    """The pack scanned as ``pack_no`` holds the journal's blobs: it is no data pack."""
    conn.execute("UPDATE temp.found_data_packs SET metadata=1 WHERE n=?", (pack_no,))


def found_chunks(conn: sqlite3.Connection, rows: Sequence[tuple[bytes, int, int, int, int]]) -> None:
    """Verified chunk blobs of the scan: ``(chunk_id, pack number, offset, stored_len, plain_len)``."""
    conn.executemany("INSERT INTO temp.found_chunks VALUES (?, ?, ?, ?, ?)", rows)


def index_found(conn: sqlite3.Connection, now: float) -> None:
    """In one transaction: the pack list and the chunk index from the scan, in key
    order; then the scratch rows of chunks go. Of two copies of one chunk the one in the
    pack scanned first is kept; the journal's packs are not data packs."""
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO packs(name, state, created) SELECT name, 'sealed', ? FROM temp.found_data_packs"
        " WHERE metadata=0 ORDER BY n", (now,))
    conn.execute(
        "INSERT OR IGNORE INTO chunks(id, pack_id, offset, stored_len, plain_len, touched)"
        " SELECT c.id, p.id, c.offset, c.stored_len, c.plain_len, ? FROM temp.found_chunks c"
        " JOIN temp.found_data_packs d ON d.n = c.pack JOIN packs p ON p.name = d.name"
        " ORDER BY c.id, c.pack", (now,))
    conn.execute("COMMIT")
    conn.execute("DROP TABLE temp.found_chunks")
