"""A reader's next chunks fetched while it verifies and sends the current one (DESIGN.md §9).

A reader of an object store pays a round trip per ranged GET, and on its own it takes
turns with the store: fetch a blob, decrypt and verify it, send it, fetch the next. A
:class:`Prefetch` belongs to one reader of a kept chunk list (one GET). It groups the
blobs of the next chunks that lie one after another in the same pack into one ranged
GET of up to ``span`` bytes and keeps up to ``depth`` such GETs in flight, on a thread
pool the pack storage shares between readers, while the reader verifies and sends the
chunks of the range it is at. A file uploaded in one go lies in its packs in file
order, so a download is a few large GETs per pack, across pack borders too (a
storage-level read-ahead only sees one pack at a time).

What it hands over is not trusted: :meth:`ChunkStore.read` verifies each blob exactly
as when it reads the blob itself, and reads a blob itself when the prefetched range
failed, came back short or does not hold it (the exact read then reports the error).

Bounds: at most ``depth + 1`` ranges per reader (the one being consumed and those in
flight), each at most ``span`` bytes or one blob; for all readers together, the
:class:`PrefetchPool`'s threads and its byte budget (a range is asked for only if
the budget has room; else the reader reads its blobs one by one as it would without
prefetch, until ranges are given back). Nothing is fetched past the end the caller
said it reads to. Closing (the download ended, or the client went away) cancels the
ranges not started and drops the others; a started ranged GET ends on its own, its
bytes are discarded and its share of the budget comes back when it ends.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from davbackup.errors import DavBackupError
from davbackup.pack import HEADER_SIZE

if TYPE_CHECKING:
    from davbackup.chunkstore import ChunkStore
    from davbackup.versions import ChunkList

#: the most bytes of consecutive blobs one ranged GET fetches, and how many such GETs
#: are kept in flight beyond the one being consumed. Measured on the throwaway Ceph RGW
#: (cold GETs of 256 MiB, 7 alternating rounds, load 3-6, medians): 16 MiB x 1 ahead
#: 398 MB/s, 8 MiB x 2 364 MB/s, other shapes within the noise; larger ranges cost the
#: node less CPU (fewer requests)
SPAN = 16 * 1024 * 1024
DEPTH = 1
#: the first range of a reader is smaller: its first bytes go out sooner
FIRST_SPAN = 2 * 1024 * 1024
#: chunk places looked up in one catalog statement while planning
PLACE_BATCH = 128

Fetch = Callable[[str, int, int], bytes]


class PrefetchPool:
    """The threads and the byte budget all readers of one pack storage share."""

    def __init__(self, fetch: Fetch, threads: int, max_bytes: int) -> None:
        self.fetch = fetch
        self.max_bytes = max_bytes
        self.held = 0  # bytes of ranges asked for and not given back
        self.peak = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="davbackup-prefetch")

    def submit(self, name: str, start: int, length: int) -> "_Ticket | None":
        """A ranged read in the background, or None if the budget has no room for it."""
        with self._lock:
            if self.held + length > self.max_bytes:
                return None
            self.held += length
            self.peak = max(self.peak, self.held)
        ticket = _Ticket(length)
        try:
            ticket.future = self._executor.submit(self._run, ticket, name, start, length)
        except RuntimeError:  # shut down: the storage is closing
            self._give_back(length)
            return None
        return ticket

    def _run(self, ticket: "_Ticket", name: str, start: int, length: int) -> bytes:
        try:
            return self.fetch(name, start, length)
        finally:  # before the future is done: whoever waits for it sees the budget given back
            with self._lock:
                ticket.ended = True
                if ticket.released:
                    self.held -= ticket.length

    def release(self, ticket: "_Ticket") -> None:
        """The reader is done with this range: its bytes count again once it has ended."""
        if ticket.future.cancel():
            self._give_back(ticket.length)  # never started
            return
        with self._lock:
            ticket.released = True
            if ticket.ended:
                self.held -= ticket.length

    def _give_back(self, length: int) -> None:
        with self._lock:
            self.held -= length

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class _Ticket:
    """One range asked of the pool."""

    __slots__ = ("length", "future", "released", "ended")

    def __init__(self, length: int) -> None:
        self.length = length
        self.future: Future[bytes] = Future()
        self.released = False
        self.ended = False


@dataclass
class _Range:
    name: str
    start: int
    end: int
    first: int  # index of the first chunk it holds
    last: int  # and of the last one
    ticket: _Ticket


class Prefetch:
    """The ranged GETs ahead of one reader of ``chunks`` (see the module docstring)."""

    def __init__(self, store: "ChunkStore", chunks: "ChunkList", pool: PrefetchPool, *,
                 span: int = SPAN, depth: int = DEPTH, first_span: int = FIRST_SPAN) -> None:
        self._store = store
        self._list = chunks
        self._pool = pool
        self.span, self.depth, self.first_span = span, depth, first_span
        self._ranges: deque[_Range] = deque()
        self._next = 0  # the first chunk not planned yet
        self._closed = False
        #: ranges submitted so far, and the most bytes held in ranges at once (tests read them)
        self.submitted = 0
        self.peak_bytes = 0

    @classmethod
    def start(cls, store: "ChunkStore", chunks: "ChunkList") -> "Prefetch | None":
        """A prefetch for a reader of ``chunks``, or None where reads are local (a
        directory, a pack cache) and fetching ahead would only cost CPU."""
        pool_of = getattr(store.storage, "prefetch_pool", None)
        pool = pool_of() if callable(pool_of) else None
        if not isinstance(pool, PrefetchPool) or len(chunks) < 2:
            return None
        return cls(store, chunks, pool, span=SPAN, depth=DEPTH, first_span=FIRST_SPAN)

    def read(self, index: int, end: int, context: str) -> bytes:
        """The verified plaintext of chunk ``index``; the caller reads nothing at or
        past byte ``end``."""
        if self._closed:
            raise ValueError("prefetch is closed")
        self._advance(index)
        stop = bisect.bisect_left(self._list.offsets, end)
        if self._ranges or index + 1 < stop:  # a lone chunk is read here, without a hand-over
            self._plan(stop)
        _off, _length, cid = self._list.row(index)
        return self._store.read(cid, None, context, via=self._take)

    def _advance(self, index: int) -> None:
        """Drop the ranges before chunk ``index``; start over if it is not the next one
        (the reader moved: a seek)."""
        ranges = self._ranges
        while ranges and ranges[0].last < index:
            self._release(ranges.popleft())
        if ranges and ranges[0].first > index:
            self._drop()
        if not ranges:
            self._next = index

    def _plan(self, stop: int) -> None:
        """Submit ranges for the chunks before index ``stop`` until ``depth`` are ahead."""
        ranges = self._ranges
        while len(ranges) <= self.depth and self._next < stop:
            j = self._next
            place = self._place(j)
            if place is None:
                self._next = stop  # the exact read of that chunk reports what is wrong
                return
            name, start, end = place
            cap = self.first_span if self.submitted == 0 else self.span
            k = j + 1
            while k < stop:
                following = self._place(k)
                if following is None or following[0] != name or following[1] != end or following[2] - start > cap:
                    break
                end = following[2]
                k += 1
            ticket = self._pool.submit(name, start, end - start)
            if ticket is None:
                return  # no room in the budget now: asked again at the next chunk
            ranges.append(_Range(name, start, end, j, k - 1, ticket))
            self._next = k
            self.submitted += 1
            self.peak_bytes = max(self.peak_bytes, sum(r.end - r.start for r in ranges))

    def _place(self, index: int) -> tuple[str, int, int] | None:
        """``(pack name, start, end)`` of chunk ``index``'s blob, or None if unknown."""
        ids = self._list.ids
        cid = ids[32 * index: 32 * index + 32]
        try:
            location = self._store.known_place(cid)
            if location is None:
                stop = min(len(self._list), index + PLACE_BATCH)
                self._store.learn_places([ids[32 * j: 32 * j + 32] for j in range(index, stop)])
                location = self._store.known_place(cid)
                if location is None:
                    return None
            name = self._store.pack_name(location.pack_id)
        except DavBackupError:
            return None  # the catalog cannot say now: the exact read reports it
        return name, location.offset, location.offset + HEADER_SIZE + location.stored_len

    def _take(self, name: str, offset: int, length: int) -> memoryview | None:
        """The blob at ``offset`` of pack ``name`` from the range being consumed, or None."""
        if not self._ranges:
            return None
        r = self._ranges[0]
        if r.name != name or offset < r.start or offset + length > r.end:
            return None
        try:
            data = r.ticket.future.result()
        except Exception:  # noqa: BLE001 - the exact read reports the real error
            return None
        if len(data) < offset + length - r.start:
            return None
        return memoryview(data)[offset - r.start: offset - r.start + length]

    def _release(self, r: _Range) -> None:
        self._pool.release(r.ticket)

    def _drop(self) -> None:
        while self._ranges:
            self._release(self._ranges.popleft())

    @property
    def planned(self) -> int:
        """The index of the first chunk no ranged GET was asked for yet."""
        return self._next

    def pending(self) -> list[Future[bytes]]:
        """The ranged GETs held (tests use it)."""
        return [r.ticket.future for r in self._ranges]

    def close(self) -> None:
        self._closed = True
        self._drop()
