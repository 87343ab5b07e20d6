"""readahead.py: sequential reads are served from windows, random reads are not, and
every byte returned is the object's byte at that offset."""

from __future__ import annotations

import os
import random
import threading

from davbackup.readahead import ReadAhead

OBJ = os.urandom(100_000)


class Fetcher:
    """Ranged reads of in-memory objects, counted (the interface a store offers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()

    def __call__(self, key: str, start: int, length: int) -> bytes:
        with self.lock:
            self.calls.append((key, start, length))
        if key != "obj":
            raise FileNotFoundError(key)
        if start >= len(OBJ):
            raise EOFError(key)
        return OBJ[start : start + length]


def test_sequential_reads_use_windows_across_borders_and_the_end() -> None:
    fetch = Fetcher()
    ra = ReadAhead(fetch, window=8192, max_windows=4)
    assert ra.read("obj", 0, 1000) is None  # a first read is nobody's continuation
    pos, served = 1000, 0
    sizes = [700, 3000, 5000, 1234, 8000, 100]
    while pos < len(OBJ):
        n = min(sizes[served % len(sizes)], len(OBJ) - pos)
        got = ra.read("obj", pos, n)
        assert got == OBJ[pos : pos + n]
        pos += n
        served += 1
    # per window, not per read (plus up to `depth` windows asked for past the end)
    assert len(fetch.calls) <= len(OBJ) // 8192 + 2 + ra.depth
    assert ra.read("obj", len(OBJ), 10) is None  # past the end: the exact read reports it
    ra.close()


def test_random_reads_fetch_nothing_extra() -> None:
    fetch = Fetcher()
    ra = ReadAhead(fetch, window=8192)
    rng = random.Random(5)
    for _ in range(50):
        off = rng.randrange(0, len(OBJ) - 100)
        assert ra.read("obj", off, 100) in (None, OBJ[off : off + 100])
    assert len(fetch.calls) <= 2  # a chance continuation may start a window, rarely
    ra.close()


def test_a_failed_window_leaves_the_read_to_the_caller() -> None:
    fetch = Fetcher()
    ra = ReadAhead(fetch, window=8192)
    assert ra.read("gone", 0, 10) is None
    assert ra.read("gone", 10, 10) is None  # the window fetch failed: no bytes, no error
    ra.close()
