"""Streaming, seekable reads of one file version (DESIGN.md §9).

The chunk list is fetched in batches starting at the chunk that holds the current
position (an indexed ``offset <= pos`` lookup: no scan from the start), unless the
caller hands over the list it has just verified; each chunk is verified on
decryption, and at most one decrypted chunk is held in memory.

Reading the next chunk ahead in a helper thread, so that it overlaps sending, was
measured and dropped for packs in a directory: on two busy cores the hand-over
between threads cost more CPU than the overlap saved (GET of 512 MiB: 0.44 s of
server CPU instead of 0.31 s, 5 % slower). From an object store, where each read is
a round trip, a reader of a kept list keeps ranged GETs of its next chunks in flight
(:mod:`davbackup.prefetch`).
"""

from __future__ import annotations

import bisect
import io
from typing import TYPE_CHECKING

from davbackup.catalog import Catalog
from davbackup.chunk_reads import ChunkPart, Location
from davbackup.chunkstore import ChunkStore
from davbackup.errors import IntegrityError
from davbackup.prefetch import Prefetch
from davbackup.versions import ChunkList, chunk_at, located_chunks

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

BATCH = 512
#: places of a kept list are looked up at least for its aligned block of this many
#: chunks around the one read: ranged GETs at random offsets of a large file (a new
#: reader each) made one statement per chunk on their first reads of it
PLACE_BLOCK = 64


class VersionReader(io.RawIOBase):
    def __init__(self, catalog: Catalog, store: ChunkStore, version_id: int, size: int, path: str,
                 chunks: ChunkList | None = None) -> None:
        """``chunks``: the whole chunk list as the caller verified it (then no batch is
        queried; each chunk's place in the packs is looked up when it is read)."""
        super().__init__()
        self._catalog = catalog
        self._store = store
        self._vid = version_id
        self.size = size
        self.path = path
        self._pos = 0
        # the current batch of chunk rows: offsets[], rows[] = (offset, length, id, location)
        self._offsets: list[int] = []
        self._rows: list[tuple[int, int, bytes, Location | None]] = []
        self._cur_index = -1
        self._cur_data = b""
        self._cur_start = 0
        self._list = chunks
        #: chunk places of the list not yet known are looked up several at a time (at
        #: least the PLACE_BLOCK around the chunk), twice as many each time up to BATCH.
        #: One statement per chunk cost a whole GET of 512 MiB 0.20 s of CPU in the
        #: reader instead of 0.175 s (SQLite).
        self._placed = (0, 0)
        self._place_batch = 8 if catalog.shared else 1
        #: ranged GETs ahead of the position (an object store without a local cache)
        self._ahead = Prefetch.start(store, chunks) if chunks is not None else None
        self._end = size  # nothing at or past it is fetched ahead (see expect)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def expect(self, end: int) -> None:
        """The caller reads nothing at or past byte ``end`` (a ranged GET): no bytes
        beyond it are fetched ahead."""
        self._end = max(0, min(self.size, end))

    def _load_batch(self, pos: int) -> None:
        conn = self._catalog.reader()
        start = chunk_at(conn, self._vid, pos)
        if start is None:
            raise IntegrityError(f"{self.path}: no chunk covers byte {pos} (version changed or catalog damaged)")
        self._rows = [
            (off, length, cid, Location(pid, poff, slen) if pid is not None and poff is not None
             and slen is not None else None)
            for off, length, cid, pid, poff, slen in located_chunks(conn, self._vid, start, BATCH)
        ]
        self._offsets = [r[0] for r in self._rows]

    def _batch_row(self, pos: int) -> tuple[int, int, bytes, Location | None]:
        i = bisect.bisect_right(self._offsets, pos) - 1
        if i < 0 or i >= len(self._rows) or pos >= self._rows[i][0] + self._rows[i][1]:
            self._load_batch(pos)
            i = bisect.bisect_right(self._offsets, pos) - 1
            if i < 0 or pos >= self._rows[i][0] + self._rows[i][1]:
                raise IntegrityError(f"{self.path}: chunk list has a gap at byte {pos}")
        return self._rows[i]

    def _chunk_at(self, pos: int) -> tuple[bytes, int]:
        if self._cur_data and self._cur_start <= pos < self._cur_start + len(self._cur_data):
            return self._cur_data, self._cur_start
        if self._list is not None:
            i = bisect.bisect_right(self._list.offsets, pos) - 1
            if i < 0:
                raise IntegrityError(f"{self.path}: chunk list has a gap at byte {pos}")
            off, length, cid = self._list.row(i)
            location = None
            if self._ahead is not None:
                data = self._ahead.read(i, self._end, f"{self.path} (bytes {off}-{off + length - 1})")
                return self._keep(data, off, length, cid)
            if not self._placed[0] <= i < self._placed[1] and self._store.known_place(cid) is None:
                start = i - i % PLACE_BLOCK
                stop = min(len(self._list), max(start + PLACE_BLOCK, i + self._place_batch))
                self._store.learn_places([self._list.ids[32 * j: 32 * j + 32] for j in range(start, stop)])
                self._placed = (start, stop)
                self._place_batch = min(BATCH, 2 * self._place_batch)
        else:
            off, length, cid, location = self._batch_row(pos)
        context = f"{self.path} (bytes {off}-{off + length - 1})"
        end = min(self._end, off + length)
        if pos > off or end < off + length:
            return self._keep_part(self._store.read_part(cid, location, pos - off, max(end, pos + 1) - off, context),
                                   off, length, cid)
        data = self._store.read(cid, location, context)
        return self._keep(data, off, length, cid)

    def _keep_part(self, part: ChunkPart, off: int, length: int, cid: bytes) -> tuple[bytes, int]:
        """Only the part of the chunk the caller will read (a ranged GET): of a
        segmented blob the segments holding it, verified; else the whole chunk."""
        if part.chunk_len != length or part.start + len(part.data) > length:
            raise IntegrityError(f"{self.path}: chunk {cid.hex()[:16]} has length {part.chunk_len}, expected {length}")
        self._cur_data, self._cur_start = part.data, off + part.start
        return part.data, off + part.start

    def _keep(self, data: bytes, off: int, length: int, cid: bytes) -> tuple[bytes, int]:
        if len(data) != length:
            raise IntegrityError(f"{self.path}: chunk {cid.hex()[:16]} has length {len(data)}, expected {length}")
        self._cur_data, self._cur_start = data, off
        return data, off

    def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes (all to the end with ``n < 0``) unless the end comes first."""
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        first = self.read1(end - self._pos)
        if self._pos >= end:
            return first
        parts = [first]
        while self._pos < end:
            parts.append(self.read1(end - self._pos))
        return b"".join(parts)

    def read1(self, n: int = -1) -> bytes:
        """At most ``n`` bytes, never past the end of the current chunk: no joins, and
        a whole chunk is returned without a copy (a streaming GET's fast path)."""
        if self.closed:
            raise ValueError("read from a closed reader")
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        if self._pos >= end:
            return b""
        data, start = self._chunk_at(self._pos)
        rel = self._pos - start
        stop = min(end - start, len(data))
        out = data if rel == 0 and stop == len(data) else data[rel:stop]
        self._pos = start + stop
        return out

    def readinto(self, buffer: "WriteableBuffer") -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
        self._cur_data = b""
        self._rows = []
        self._list = None
        super().close()
