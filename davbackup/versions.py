"""File versions: ordered chunk lists with byte offsets, stored as shared segments
(DESIGN.md §7.3, :mod:`davbackup.chunklists`).

This module and davbackup/chunklists.py are the only ones that read or write the
``versions`` table and the chunk lists (``version_chunks``, ``segments``,
``segment_chunks``, ``version_segments``); the tree, the reader and the maintenance
commands call the functions below.
"""

from __future__ import annotations

import sqlite3
import threading
from array import array
from collections import OrderedDict
from typing import Iterable, Iterator

import blake3

from davbackup import chunklists
from davbackup.errors import IntegrityError


def version_etag(etag_key: bytes, size: int, chunk_ids: Iterable[bytes]) -> str:
    """A strong ETag: keyed hash of the size and chunk IDs, so equal content, equal tag."""
    h = blake3.blake3(key=etag_key)
    h.update(size.to_bytes(8, "big"))
    for cid in chunk_ids:
        h.update(cid)
    return h.hexdigest(16)


def insert_version(
    conn: sqlite3.Connection, size: int, etag: str, chunks: list[tuple[int, int, bytes]], now: float,
    checksums: bytes | None = None,
) -> int:
    """Insert a version and its ``(offset, length, chunk_id)`` rows; returns its ID."""
    cur = conn.execute(
        "INSERT INTO versions(size, etag, created, checksums) VALUES (?, ?, ?, ?)", (size, etag, now, checksums)
    )
    vid = int(cur.lastrowid)  # type: ignore[arg-type]
    chunklists.store(conn, vid, chunks)
    return vid


class ChunkList:
    """A verified chunk list in compact form: offsets (8 bytes each) and the chunk IDs
    concatenated (32 bytes each); lengths follow from the next offset and the size."""

    __slots__ = ("offsets", "ids", "size")

    def __init__(self, offsets: array[int], ids: bytes, size: int) -> None:
        self.offsets, self.ids, self.size = offsets, ids, size

    def __len__(self) -> int:
        return len(self.offsets)

    def row(self, i: int) -> tuple[int, int, bytes]:
        """``(offset, length, chunk_id)`` of chunk ``i``."""
        offsets = self.offsets
        end = offsets[i + 1] if i + 1 < len(offsets) else self.size
        return offsets[i], end - offsets[i], self.ids[32 * i: 32 * i + 32]


class VerifiedChunkLists:
    """The chunk lists of recently opened versions, as they passed :func:`verify_version`.

    A version never changes, so a list verified against its keyed ETag stays right for
    that ``(version_id, size, etag)``. A reader that finds it here reads its chunks by
    this list, not by the catalog's rows: what it serves is exactly what was verified,
    as if it had verified again. Bounded by the number of chunks held (40 bytes each),
    least recently opened dropped first."""

    def __init__(self, max_chunks: int = 1 << 17) -> None:
        self.max_chunks = max_chunks
        self._lists: OrderedDict[tuple[int, int, str], ChunkList] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, version_id: int, size: int, etag: str) -> ChunkList | None:
        with self._lock:
            found = self._lists.get((version_id, size, etag))
            if found is not None:
                self._lists.move_to_end((version_id, size, etag))
            return found

    def put(self, version_id: int, size: int, etag: str, chunks: ChunkList) -> None:
        if len(chunks) > self.max_chunks // 4:
            return  # one huge file would push out everything else
        with self._lock:
            key = (version_id, size, etag)
            if key in self._lists:
                return
            self._lists[key] = chunks
            self._held += len(chunks)
            while self._held > self.max_chunks:
                _, old = self._lists.popitem(last=False)
                self._held -= len(old)


def verify_version(conn: sqlite3.Connection, etag_key: bytes, version_id: int, size: int, etag: str, path: str,
                   *, keep: int = 0) -> ChunkList | None:
    """Check that a version's size and chunk list are the ones its keyed ETag was made
    of: a chunk list swapped with another file's, or a changed size, fails here.

    The list is read as a stream (memory does not grow with the file). With ``keep``,
    a list of at most that many chunks is returned in compact form, so that a reader
    need not query it again; a longer one gives None."""
    cursor = conn.execute(
        "SELECT offset, length, chunk_id FROM version_chunks WHERE version_id=? ORDER BY offset", (version_id,)
    )
    h = blake3.blake3(key=etag_key)
    h.update(size.to_bytes(8, "big"))
    offsets: array[int] | None = array("q") if keep else None
    ids = bytearray()
    expected = 0
    contiguous = True
    for offset, length, cid in cursor:
        if offset != expected:
            contiguous = False
        expected += length
        h.update(cid)
        if offsets is not None:
            if len(offsets) < keep and len(cid) == 32:
                offsets.append(offset)
                ids += cid
            else:
                offsets = None
    if not contiguous or expected != size or h.hexdigest(16) != etag:
        raise IntegrityError(f"{path}: the catalog's chunk list or size of this file fails verification")
    return None if offsets is None else ChunkList(offsets, bytes(ids), size)


# -- queries for the tree, the reader and maintenance ---------------------------------


def mark_orphaned(conn: sqlite3.Connection, version_id: int, now: float) -> None:
    """Nothing points at the version any more: gc deletes it after the grace period."""
    conn.execute("UPDATE versions SET orphaned=? WHERE id=?", (now, version_id))


def orphan_state(conn: sqlite3.Connection, version_id: int) -> tuple[float | None, int] | None:
    """``(orphaned since or None, size)`` of a version; None if there is no such version."""
    row = conn.execute("SELECT orphaned, size FROM versions WHERE id=?", (version_id,)).fetchone()
    return None if row is None else (row[0], int(row[1]))


def unused_orphans(conn: sqlite3.Connection, orphaned_before: float) -> list[int]:
    """gc: versions orphaned before the time given that neither the live tree nor
    history references."""
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM versions WHERE orphaned IS NOT NULL AND orphaned <= ?"
            " AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.version_id = versions.id)"
            " AND NOT EXISTS (SELECT 1 FROM node_history h WHERE h.version_id = versions.id)",
            (orphaned_before,),
        )
    ]


def delete_version(conn: sqlite3.Connection, version_id: int) -> None:
    """Forget a version and its chunk list (gc, once nothing references it)."""
    chunklists.drop(conn, version_id)
    conn.execute("DELETE FROM versions WHERE id=?", (version_id,))


def all_versions(conn: sqlite3.Connection) -> list[tuple[int, int, str]]:
    """``(id, size, etag)`` of every version."""
    return conn.execute("SELECT id, size, etag FROM versions").fetchall()


def version_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM versions").fetchone()[0])


def chunk_rows(conn: sqlite3.Connection, version_id: int) -> list[tuple[int, int, bytes]]:
    """A version's chunk list as ``(offset, length, chunk_id)`` rows, unverified."""
    return [
        (int(o), int(n), bytes(c))
        for o, n, c in conn.execute(
            "SELECT offset, length, chunk_id FROM version_chunks WHERE version_id=? ORDER BY offset", (version_id,)
        ).fetchall()
    ]


def all_chunk_spans(conn: sqlite3.Connection) -> Iterator[tuple[int, int, int]]:
    """``(version_id, offset, length)`` of every chunk of every version, in order (check)."""
    yield from conn.execute("SELECT version_id, offset, length FROM version_chunks ORDER BY version_id, offset")


def chunks_missing_from_index(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
    """``(version_id, chunk_id)`` of every referenced chunk the chunk index lacks (check)."""
    return conn.execute(
        "SELECT vc.version_id, vc.chunk_id FROM version_chunks vc"
        " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = vc.chunk_id)"
    ).fetchall()


def versions_missing_chunks(conn: sqlite3.Connection) -> int:
    """How many versions need a chunk the chunk index lacks (recover: unreadable files)."""
    return int(conn.execute(
        "SELECT count(DISTINCT v.id) FROM versions v JOIN version_chunks vc ON vc.version_id = v.id"
        " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = vc.chunk_id)"
    ).fetchone()[0])


def versions_using(conn: sqlite3.Connection, chunk_id: bytes) -> list[int]:
    """The versions whose chunk list holds a chunk."""
    return [
        int(r[0]) for r in conn.execute("SELECT DISTINCT version_id FROM version_chunks WHERE chunk_id=?", (chunk_id,))
    ]


def chunk_at(conn: sqlite3.Connection, version_id: int, pos: int) -> int | None:
    """Offset of the chunk of a version that holds byte ``pos`` (None: no chunk does)."""
    row = conn.execute(
        "SELECT offset FROM version_chunks WHERE version_id=? AND offset<=? ORDER BY offset DESC LIMIT 1",
        (version_id, pos),
    ).fetchone()
    return None if row is None else int(row[0])


def located_chunks(
    conn: sqlite3.Connection, version_id: int, start: int, limit: int
) -> list[tuple[int, int, bytes, int | None, int | None, int | None]]:
    """Up to ``limit`` chunks of a version from offset ``start`` on, each with where the
    chunk index puts it: ``(offset, length, chunk_id, pack_id, pack_offset, stored_len)``
    (the last three None for a chunk the index lacks). One query for the reader's batch."""
    return conn.execute(
        "SELECT vc.offset, vc.length, vc.chunk_id, c.pack_id, c.offset, c.stored_len"
        " FROM version_chunks vc LEFT JOIN chunks c ON c.id = vc.chunk_id"
        " WHERE vc.version_id=? AND vc.offset>=? ORDER BY vc.offset LIMIT ?",
        (version_id, start, limit),
    ).fetchall()
