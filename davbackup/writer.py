"""Streaming writes of one file: chunk, store, then commit atomically (DESIGN.md §8).

Memory stays bounded by the chunker's buffer (at most the maximum chunk size plus
the piece being written). Nothing is visible until :meth:`FileWriter.commit`, whose
catalog transaction links the new version in one step; an aborted or crashed write
leaves at most unreferenced chunks behind, which gc reclaims.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Iterator, TypeVar

from davbackup import clock
from davbackup.body_segments import SegmentPool
from davbackup.chunker import Chunker, StreamChunker
from davbackup.chunkstore import ChunkBatch, ChunkStore
from davbackup.errors import IncompleteBody
from davbackup.offload import Helper, Offloader
from davbackup.versions import insert_version, version_etag

T = TypeVar("T")

# on_commit(conn, version_id, size, etag, now) runs inside the commit transaction.
CommitHook = Callable[[sqlite3.Connection, int, int, str, float], T]


#: bytes a writer receives before it hands chunk processing to a helper thread
OFFLOAD_AFTER = 4 * 1024 * 1024


class FileWriter:
    """Writes one file version. Not thread-safe: one request thread drives it; the
    chunk processing may run on a helper thread (:mod:`davbackup.offload`), and every
    method that looks at the chunk list drains the helper first."""

    def __init__(
        self,
        store: ChunkStore,
        chunker: Chunker,
        etag_key: bytes,
        *,
        chunks: list[tuple[int, int, bytes]] | None = None,
        offloader: Offloader | None = None,
    ) -> None:
        self._store = store
        self._etag_key = etag_key
        self._stream = StreamChunker(chunker, recycle=self._recycle)
        self._segments: SegmentPool | None = None  # made by the first fill()
        self._batch = ChunkBatch()
        self.chunks: list[tuple[int, int, bytes]] = list(chunks or [])
        self._chunked = sum(length for _, length, _ in self.chunks)
        self._accepted = self._chunked  # bytes given to write(), maintained by the caller's thread
        self._closed = False
        self._offloader = offloader
        self._helper: Helper | None = None
        self._error: BaseException | None = None

    @property
    def received(self) -> int:
        """Bytes accepted so far (chunked, buffered or still being processed)."""
        return self._accepted

    @property
    def durable_offset(self) -> int:
        """Bytes covered by complete chunks (what a checkpoint can make durable)."""
        self._drain()
        return self._chunked

    def write(self, data: bytes | bytearray | memoryview, *, owned: bool = False) -> None:
        """Take the next bytes of the file. ``owned``: the caller hands ``data`` over
        and never changes it again, so a helper thread may use it as it is (else any
        mutable buffer is copied first)."""
        self._check_open()
        helper = self._offload(len(data))
        if helper is not None:
            helper.submit(self._process, data if owned or isinstance(data, bytes) else bytes(data))
        else:
            self._process(data)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("write to a closed FileWriter")
        if self._error is not None:
            raise self._error

    def _offload(self, accepted: int) -> Helper | None:
        """Count ``accepted`` more bytes; the helper thread they go to (taken once the
        file has grown past OFFLOAD_AFTER), or None: they are chunked here."""
        self._accepted += accepted
        if self._helper is None and self._offloader is not None and self._accepted > OFFLOAD_AFTER:
            self._helper = self._offloader.acquire()
        return self._helper

    def fill(self, read_into: Callable[[memoryview], int]) -> int:
        """Take the next bytes of the file by reading them straight into a segment the
        chunker then cuts in place (:mod:`davbackup.body_segments`): ``read_into(view)``
        fills ``view`` as far as the body goes and returns the count, less than its
        length only at the body's end. Returns that count (0: nothing was left)."""
        self._check_open()
        pool = self._segments
        if pool is None:
            pool = self._segments = SegmentPool(self._stream.max_chunk)
        segment = pool.take()
        try:
            with memoryview(segment) as whole:
                got = read_into(whole[pool.front :])
        except BaseException:
            pool.give(segment, reusable=False)
            raise
        if not got:
            pool.give(segment)
            return 0
        helper = self._offload(got)
        if helper is not None:
            helper.submit(self._process_segment, segment, got)
        else:
            self._process_segment(segment, got)
        return got

    def _recycle(self, segment: bytearray, reusable: bool) -> None:
        if self._segments is not None:
            self._segments.give(segment, reusable)

    def _process_segment(self, segment: bytearray, got: int) -> None:
        pool = self._segments
        assert pool is not None
        if self._error is not None:
            pool.give(segment)  # an earlier piece failed: the write will be refused
            return
        try:
            self._add_all(list(self._stream.feed_segment(segment, pool.front, pool.front + got)))
        except BaseException as exc:  # handed to the request thread by _drain()
            self._error = exc
            if not self._stream.holds(segment):
                pool.give(segment, reusable=False)

    def _process(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            return  # an earlier piece failed: the write will be refused
        try:
            self._add_all(list(self._stream.feed(data)))
        except BaseException as exc:  # handed to the request thread by _drain()
            self._error = exc

    def _drain(self) -> None:
        """Wait for the helper (if any) and give it back; re-raise what it hit."""
        helper, self._helper = self._helper, None
        if helper is not None:
            helper.release()
        if self._error is not None:
            raise self._error

    def _add_all(self, chunks: list[memoryview]) -> None:
        """Store the chunks one cut produced (the chunk index is asked about them at once)."""
        if not chunks:
            return
        for ref in self._store.put_many(chunks, self._batch):
            self.chunks.append((self._chunked, ref.length, ref.chunk_id))
            self._chunked += ref.length

    def settle(self) -> None:
        """Wait until every written byte has been chunked (or is buffered)."""
        self._drain()

    def checkpoint(self, persist: Callable[[sqlite3.Connection, float], None]) -> int:
        """Make every complete chunk durable and run ``persist`` in the same transaction.

        Used by resumable uploads: ``persist`` records the session's chunk list.
        Returns the durable offset.
        """
        self._drain()
        self._store.make_durable(self._batch)
        batch = self._batch

        def txn(conn: sqlite3.Connection) -> None:
            now = clock.now()
            self._store.record(conn, batch, now)
            persist(conn, now)

        self._store.catalog.write(txn)
        self._store.release(batch)
        return self._chunked

    def extend(self, chunks: list[tuple[int, int, bytes]]) -> None:
        """Append already-stored chunks (offsets are recomputed) after flushing the buffer."""
        self.finish_chunking()
        self._accepted += sum(length for _off, length, _cid in chunks)
        for _off, length, cid in chunks:
            self._batch.existing.add(cid)
            self.chunks.append((self._chunked, length, cid))
            self._chunked += length

    def mark_existing(self, chunk_ids: list[bytes]) -> None:
        """Chunks already in the index that this writer's commit must find there."""
        self._batch.existing.update(chunk_ids)

    def iter_content(self, path: str) -> Iterator[bytes]:
        """The plaintext of the chunks written so far, in order (for digest checks)."""
        self._drain()
        for _off, _length, cid in self.chunks:
            pending = self._batch.new.get(cid)
            location = pending[0] if pending else None
            yield self._store.read(cid, location, path)

    def take_tail(self) -> bytes:
        """Remove and return the bytes buffered after the last chunk boundary
        (complete chunks still buffered are stored first, so the tail is short)."""
        self._drain()
        self._add_all(list(self._stream.cut_complete()))
        tail = self._stream.take()
        self._accepted -= len(tail)
        return tail

    def store_tail(self, data: bytes) -> tuple[int, bytes] | None:
        """Store ``data`` as a chunk without adding it to the file (a session's tail)."""
        if not data:
            return None
        ref = self._store.put(data, self._batch)
        return ref.length, ref.chunk_id

    def finish_chunking(self) -> None:
        self._drain()
        self._add_all(list(self._stream.finish()))

    def commit(
        self,
        on_commit: CommitHook[T],
        *,
        expected_size: int | None = None,
        verify: Callable[[], None] | None = None,
        checksums: bytes | Callable[[], bytes | None] | None = None,
    ) -> T:
        """Store the rest, make it durable, and link the new version atomically."""
        if self._closed:
            raise ValueError("commit of a closed FileWriter")
        try:
            self.finish_chunking()
            if expected_size is not None and self._chunked != expected_size:
                raise IncompleteBody(
                    f"received {self._chunked} bytes but {expected_size} were announced; nothing was stored"
                )
            if verify is not None:
                verify()
            checksum_text = checksums() if callable(checksums) else checksums
            size = self._chunked
            etag = version_etag(self._etag_key, size, (cid for _, _, cid in self.chunks))
            batch = self._batch
            chunks = self.chunks
            if len(batch.new) > 1:
                self._store.make_durable(batch)  # large writes: sync before taking the batch

            def txn(conn: sqlite3.Connection) -> T:
                # The pack fsync runs inside the group commit, before COMMIT: writers in
                # one batch share it (invariant 1 still holds: data before the row).
                self._store.make_durable(batch)
                now = clock.now()
                self._store.record(conn, batch, now)
                vid = insert_version(conn, size, etag, chunks, now, checksum_text)
                return on_commit(conn, vid, size, etag, now)

            return self._store.catalog.write(txn)
        finally:
            self._closed = True
            self._store.release(self._batch)
            self._drop_segments()

    def _drop_segments(self) -> None:
        if self._segments is not None:
            self._segments.clear()

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._drain()
            except BaseException:  # noqa: BLE001 - aborting anyway
                pass
            self._store.release(self._batch)
            self._drop_segments()

