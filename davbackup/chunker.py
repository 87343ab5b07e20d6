"""Content-defined chunking: bytes in, chunk boundaries out; no I/O (DESIGN.md §4).

FastCDC 2020 (the ``pyfastcdc`` Cython implementation) with a gear table seeded from
the repository's secret identity key, so boundaries differ between repositories.
A boundary depends only on the bytes from the start of its chunk, which is what
lets :class:`StreamChunker` cut a stream piece by piece, and lets an interrupted
upload resume at any chunk boundary with the same cuts it would have made anyway.
"""

from __future__ import annotations

from typing import Callable, Iterator

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

    The buffer is a bytearray of fixed capacity (grown, never shrunk, while a stream
    lasts) holding the buffered bytes at ``_buf[_start:_len]``: a fed piece is copied
    in once, and before the next piece the unfinished tail is moved to the front in
    place. (Deleting the cut bytes from the front of a growing bytearray instead, as
    before, made CPython copy the rest into a new allocation, and each following
    ``+=`` reallocate and often copy it again.)

    :meth:`feed_segment` takes a buffer the caller has already read the next bytes
    into, with room in front of them: only the unfinished tail is copied there, and
    that buffer becomes the chunker's (the one it replaces goes to ``recycle``). That
    spares the copy of every byte a large upload's ``feed`` would make.

    The chunks handed out are read-only views of the buffer, not copies: each is
    valid until the next call of :meth:`feed`, :meth:`feed_segment`,
    :meth:`cut_complete`, :meth:`take` or :meth:`finish` (the cut bytes are dropped
    only then). A caller that keeps a view longer keeps its bytes too: the buffer is
    then replaced by a copy instead of being moved in place, never overwritten under
    the view, and never recycled.
    """

    def __init__(self, chunker: Chunker, recycle: Callable[[bytearray, bool], None] | None = None) -> None:
        self._chunker = chunker
        self._max = chunker.params.max_size
        self._threshold = 2 * self._max
        self._buf = bytearray()  # capacity; the buffered bytes are _buf[_start:_len]
        self._start = 0  # bytes at the front already handed out as chunks (or moved away)
        self._len = 0
        #: ``recycle(buffer, reusable)`` gets back each buffer given to feed_segment once
        #: the chunker is done with it (``reusable``: no view of it is left)
        self._recycle = recycle
        self._segment = False  # whether _buf came from feed_segment

    @property
    def buffered(self) -> int:
        return self._len - self._start

    @property
    def max_chunk(self) -> int:
        """The longest chunk; what stays buffered after a cut is shorter."""
        return self._max

    def holds(self, buf: bytearray) -> bool:
        """Whether ``buf`` is the chunker's buffer now."""
        return buf is self._buf

    def _replace(self, buf: bytearray) -> None:
        """Make ``buf`` the buffer; give the old one back if it was a segment."""
        old, self._buf = self._buf, buf
        if self._segment and self._recycle is not None and old is not buf:
            self._recycle(old, not _exported(old))
        self._segment = False

    def _drop_cut(self) -> None:
        """Move the buffered bytes to the front (the handed-out ones are dropped)."""
        cut = self._start
        if not cut:
            return
        rest = self._len - cut
        if _exported(self._buf):  # a view of a chunk is still held: leave it its bytes
            fresh = bytearray(len(self._buf))
            fresh[:rest] = memoryview(self._buf)[cut : self._len]
            self._replace(fresh)
        elif rest:
            with memoryview(self._buf) as view:
                view[:rest] = view[cut : self._len]  # overlapping: a memmove
        self._len = rest
        self._start = 0

    def _room(self, n: int) -> None:
        """Make the buffer's capacity hold ``n`` more bytes (it grows by doubling, up
        to what a cut needs: the threshold plus one piece)."""
        need = self._len + n
        capacity = len(self._buf)
        if need <= capacity:
            return
        grown = bytearray(max(need, min(2 * capacity, self._threshold + n)))
        if self._len:
            grown[: self._len] = memoryview(self._buf)[: self._len]
        self._replace(grown)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Yield every chunk that is complete once ``data`` is appended."""
        self._drop_cut()
        n = len(data)
        if n:
            self._room(n)
            end = self._len + n
            self._buf[self._len : end] = data  # same length: one copy, no resize
            self._len = end
        if self._len >= self._threshold:
            yield from self.cut_complete()

    def feed_segment(self, segment: bytearray, start: int, end: int) -> Iterator[memoryview]:
        """Yield every chunk that is complete once ``segment[start:end]`` is appended.

        The segment becomes the chunker's buffer: the buffered bytes are copied in
        front of ``start`` (if they do not fit there, the bytes are fed as a piece
        instead), and every chunk whose end is decided is cut right away. The caller
        must not touch the segment again; it comes back through ``recycle``.
        """
        tail = self.buffered
        if tail > start:  # no room in front: copy the new bytes instead
            with memoryview(segment) as view:
                yield from self.feed(view[start:end])
            if self._recycle is not None:
                self._recycle(segment, not _exported(segment))
            return
        if tail:
            segment[start - tail : start] = memoryview(self._buf)[self._start : self._len]
        self._replace(segment)
        self._segment = True
        self._start, self._len = start - tail, end
        yield from self.cut_complete()

    def _view(self) -> memoryview:
        """A read-only view of the buffered bytes (the caller releases it)."""
        with memoryview(self._buf) as whole:
            return whole[self._start : self._len].toreadonly()

    def cut_complete(self) -> Iterator[memoryview]:
        """Yield every chunk whose end is already decided, keeping only the last,
        unfinished one buffered (used before a resumable upload stores its tail)."""
        if not self.buffered:
            return
        view = self._view()
        try:
            lengths = self._chunker.lengths(view)
            # All but the last cut are final. The last is final only if it hit max_size.
            if lengths[-1] < self._max:
                lengths = lengths[:-1]
            yield from self._hand_out(view, lengths)
        finally:
            view.release()  # the chunks' own views stay valid

    def _hand_out(self, view: memoryview, lengths: list[int]) -> Iterator[memoryview]:
        """The chunks of these lengths from the front of ``view`` (the buffered bytes),
        each counted as handed out once the caller has taken it."""
        base = self._start
        start = 0
        for n in lengths:
            yield view[start : start + n]
            start += n
            self._start = base + start

    def take(self) -> bytes:
        """Remove and return the buffered, not yet cut bytes."""
        data = bytes(memoryview(self._buf)[self._start : self._len])
        self._clear()
        return data

    def _clear(self) -> None:
        self._replace(bytearray())
        self._len = 0
        self._start = 0

    def finish(self) -> Iterator[memoryview]:
        """Yield the remaining chunks at end of stream."""
        if self.buffered:
            view = self._view()
            try:
                yield from self._hand_out(view, self._chunker.lengths(view))
            finally:
                view.release()
        self._clear()


def _exported(buf: bytearray) -> bool:
    """Whether a view of ``buf`` exists (CPython refuses to resize it then)."""
    if not buf:
        return False
    last = buf[-1]
    try:
        del buf[-1:]
    except BufferError:
        return True
    buf.append(last)  # back into the capacity just freed: no reallocation
    return False
