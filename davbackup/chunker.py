"""Content-defined chunking: bytes in, chunk boundaries out; no I/O (DESIGN.md §4).

FastCDC 2020 (the ``pyfastcdc`` Cython implementation) with a gear table seeded from
the repository's secret identity key, so boundaries differ between repositories.
A boundary depends only on the bytes from the start of its chunk, which is what
lets :class:`StreamChunker` cut a stream piece by piece, and lets an interrupted
upload resume at any chunk boundary with the same cuts it would have made anyway.
"""

from __future__ import annotations

from typing import Iterator

from pyfastcdc import FastCDC

from davbackup.config import ChunkerParams


class Chunker:
    """Cuts complete buffers."""

    def __init__(self, params: ChunkerParams, seed: int) -> None:
        self.params = params
        self._cdc = FastCDC(
            avg_size=params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,  # type: ignore[arg-type]
            seed=seed,
        )

    def lengths(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Chunk lengths of ``data`` taken as a whole stream (the last may be short)."""
        if not len(data):
            return []
        return [c.length for c in self._cdc.cut_buf(memoryview(data))]


class StreamChunker:
    """Cuts a stream fed in arbitrary pieces into the same chunks as :class:`Chunker`.

    Memory is bounded: at most ``2 * max_size`` plus one fed piece is buffered. The
    buffer is cut only once it holds two maximum chunks, so the unfinished last
    chunk, which is scanned again next time, is a small share of what is scanned.
    """

    def __init__(self, chunker: Chunker) -> None:
        self._chunker = chunker
        self._max = chunker.params.max_size
        self._threshold = 2 * self._max
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        """Yield every chunk that is complete once ``data`` is appended."""
        self._buf += data
        if len(self._buf) >= self._threshold:
            yield from self.cut_complete()

    def cut_complete(self) -> Iterator[bytes]:
        """Yield every chunk whose end is already decided, keeping only the last,
        unfinished one buffered (used before a resumable upload stores its tail)."""
        while self._buf:
            lengths = self._chunker.lengths(self._buf)
            # All but the last cut are final. The last is final only if it hit max_size.
            if lengths[-1] < self._max:
                lengths = lengths[:-1]
            if not lengths:
                break
            start = 0
            view = memoryview(self._buf)
            try:
                for n in lengths:
                    yield bytes(view[start : start + n])
                    start += n
            finally:
                view.release()
            del self._buf[:start]

    def take(self) -> bytes:
        """Remove and return the buffered, not yet cut bytes."""
        data = bytes(self._buf)
        self._buf = bytearray()
        return data

    def finish(self) -> Iterator[bytes]:
        """Yield the remaining chunks at end of stream."""
        if self._buf:
            view = memoryview(self._buf)
            start = 0
            try:
                for n in self._chunker.lengths(view):
                    yield bytes(view[start : start + n])
                    start += n
            finally:
                view.release()
            self._buf = bytearray()
