"""Buffers a large upload's body is read into, then cut in place (DESIGN.md §8).

A request thread reads the next bytes of a body straight from the socket into a
segment, behind ``front`` bytes left free; the chunker takes the segment as its
buffer and copies only its unfinished last chunk into that free room
(:meth:`davbackup.chunker.StreamChunker.feed_segment`). Each byte is thus written
once in user space (by the receive) instead of into a block first and then into
the chunker's buffer, and a block is not zero-filled per read either: the segments
of an upload are reused. At most ``limit`` segments exist per upload; a reader that
wants one more waits until the chunker gives one back.
"""

from __future__ import annotations

import threading

#: the body bytes read into one segment
SEGMENT_BYTES = 4 * 1024 * 1024
#: segments of one upload: one being read into, one being cut, one waiting between them
SEGMENTS = 3


class SegmentPool:
    """The segments of one upload (thread-safe: a request thread takes them, the
    thread that cuts gives them back)."""

    def __init__(self, front: int, payload: int = SEGMENT_BYTES, limit: int = SEGMENTS) -> None:
        self.front = front  # free room before the body bytes: the longest unfinished chunk
        self.size = front + payload
        self._limit = limit
        self._free: list[bytearray] = []
        self._out = 0  # segments handed out and not given back
        self._cond = threading.Condition(threading.Lock())

    def take(self) -> bytearray:
        """A segment to read into (waits while ``limit`` are out)."""
        with self._cond:
            while not self._free and self._out >= self._limit:
                self._cond.wait()
            self._out += 1
            if self._free:
                return self._free.pop()
        return bytearray(self.size)

    def give(self, segment: bytearray, reusable: bool = True) -> None:
        """Take a segment back; ``reusable``: nothing refers to its bytes any more."""
        with self._cond:
            self._out -= 1
            if reusable and len(segment) == self.size:
                self._free.append(segment)
            self._cond.notify()

    def clear(self) -> None:
        """Drop the idle segments (the upload is over)."""
        with self._cond:
            self._free.clear()
