"""Chunk lists of file versions, stored as shared segments (DESIGN.md §7.3).

A version's chunk list is cut into *segments* at content-defined points of the list
itself: after a chunk whose ID's last byte is a multiple of 64 (IDs are keyed hashes,
so about one chunk in 64), and after at most 256 chunks. A segment is stored once,
found by the digest of its rows, and shared by every version that contains it; a
version lists its segments with their byte offsets. A new version of a large file in
which one region changed therefore adds one or two segments and one row per segment,
not one row per chunk (kopia's indirect objects work the same way).

``version_chunks`` is a view that expands segments back into ``(version_id, offset,
length, chunk_id)`` rows, so readers see one flat list.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable, Sequence

import blake3

BOUNDARY_MODULUS = 64
MAX_SEGMENT_CHUNKS = 256

ChunkRow = tuple[int, int, bytes]  # (offset, length, chunk_id)

SCHEMA = """
CREATE TABLE segments(id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, length INTEGER NOT NULL);
CREATE TABLE segment_chunks(
    segment_id INTEGER NOT NULL,
    rel INTEGER NOT NULL,
    length INTEGER NOT NULL,
    chunk_id BLOB NOT NULL,
    PRIMARY KEY (segment_id, rel)) WITHOUT ROWID;
CREATE INDEX segment_chunks_by_chunk ON segment_chunks(chunk_id);
CREATE TABLE version_segments(
    version_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    segment_id INTEGER NOT NULL,
    PRIMARY KEY (version_id, offset)) WITHOUT ROWID;
CREATE INDEX version_segments_by_segment ON version_segments(segment_id);
"""

VIEW = """
CREATE VIEW version_chunks(version_id, offset, length, chunk_id) AS
    SELECT vs.version_id, vs.offset + sc.rel, sc.length, sc.chunk_id
    FROM version_segments vs JOIN segment_chunks sc ON sc.segment_id = vs.segment_id
"""


def split(chunks: Sequence[ChunkRow]) -> list[list[ChunkRow]]:
    """Cut a chunk list into segments at content-defined points (pure)."""
    segments: list[list[ChunkRow]] = []
    current: list[ChunkRow] = []
    for row in chunks:
        current.append(row)
        if row[2][-1] % BOUNDARY_MODULUS == 0 or len(current) >= MAX_SEGMENT_CHUNKS:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return segments


def _digest(rows: Iterable[tuple[int, int, bytes]]) -> bytes:
    h = blake3.blake3()
    for rel, length, cid in rows:
        h.update(rel.to_bytes(8, "big") + length.to_bytes(8, "big") + cid)
    return h.digest(16)


def store(conn: sqlite3.Connection, version_id: int, chunks: Sequence[ChunkRow]) -> None:
    """Record a version's chunk list, reusing segments that already exist."""
    placed = []
    for segment in split(chunks):
        start = segment[0][0]
        rows = [(off - start, length, cid) for off, length, cid in segment]
        digest = _digest(rows)
        end = rows[-1][0] + rows[-1][1]
        # a new segment in one statement; an existing one (same digest) is looked up
        made = conn.execute("INSERT INTO segments(digest, length) VALUES (?, ?) ON CONFLICT(digest) DO NOTHING"
                            " RETURNING id", (digest, end)).fetchall()
        if not made:
            segment_id = int(conn.execute("SELECT id FROM segments WHERE digest=?", (digest,)).fetchone()[0])
        else:
            segment_id = int(made[0][0])
            conn.executemany(
                "INSERT INTO segment_chunks(segment_id, rel, length, chunk_id) VALUES (?, ?, ?, ?)",
                [(segment_id, rel, length, cid) for rel, length, cid in rows],
            )
        placed.append((version_id, start, segment_id))
    conn.executemany("INSERT INTO version_segments(version_id, offset, segment_id) VALUES (?, ?, ?)", placed)


def drop(conn: sqlite3.Connection, version_id: int) -> None:
    """Forget a version's chunk list; segments no version uses any more go with it."""
    segment_ids = [
        r[0] for r in conn.execute("SELECT DISTINCT segment_id FROM version_segments WHERE version_id=?", (version_id,))
    ]
    conn.execute("DELETE FROM version_segments WHERE version_id=?", (version_id,))
    for segment_id in segment_ids:
        if conn.execute("SELECT 1 FROM version_segments WHERE segment_id=? LIMIT 1", (segment_id,)).fetchone():
            continue
        conn.execute("DELETE FROM segment_chunks WHERE segment_id=?", (segment_id,))
        conn.execute("DELETE FROM segments WHERE id=?", (segment_id,))


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3: move every flat chunk list into segments, then replace the
    ``version_chunks`` table by the view."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    version_ids = [r[0] for r in conn.execute("SELECT DISTINCT version_id FROM version_chunks")]
    for vid in version_ids:
        rows = conn.execute(
            "SELECT offset, length, chunk_id FROM version_chunks WHERE version_id=? ORDER BY offset", (vid,)
        ).fetchall()
        store(conn, vid, [(int(o), int(n), bytes(c)) for o, n, c in rows])
    conn.execute("DROP TABLE version_chunks")
    conn.execute(VIEW)
