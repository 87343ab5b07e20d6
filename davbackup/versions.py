"""File versions: ordered chunk lists with byte offsets, stored as shared segments
(DESIGN.md §7.3, :mod:`davbackup.chunklists`)."""

from __future__ import annotations

import sqlite3
import threading
from array import array
from collections import OrderedDict
from typing import Iterable

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

    def __init__(self, offsets: array, ids: bytes, size: int) -> None:
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
    offsets: array | None = array("q") if keep else None
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
