"""Helper threads that process the chunks of large writes (DESIGN.md §8).

A request thread receiving an upload hands the received pieces to one helper, which
cuts, hashes, compresses, encrypts and appends them while the request thread reads
the next bytes from the socket. The heavy steps release the GIL, so on two cores the
two halves overlap. A writer takes a helper only when one is idle and keeps it until
it is drained (commit, abort, checkpoint); otherwise it processes inline, so a
stalled client can never hold up another upload.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

Piece = bytes | bytearray | memoryview  # a piece of a body, handed over: never changed after submit
QUEUE_PIECES = 4  # pieces (of up to a block, 1 MiB, or a segment) in flight per writer


class Helper:
    """One helper thread with its own queue; serves one writer at a time."""

    def __init__(self, pool: "Offloader", name: str) -> None:
        self._pool = pool
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.Queue(QUEUE_PIECES)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                fn, args = item
                fn(*args)
            finally:
                self._queue.task_done()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the helper thread, after what was submitted before."""
        self._queue.put((fn, args))

    def drain(self) -> None:
        """Wait until everything submitted has been processed."""
        self._queue.join()

    def release(self) -> None:
        self.drain()
        self._pool._give_back(self)

    def stop(self) -> None:
        self._queue.put(None)


class Offloader:
    def __init__(self, threads: int) -> None:
        self._idle: list[Helper] = []
        self._all: list[Helper] = []
        self._lock = threading.Lock()
        self._max = threads

    def acquire(self) -> Helper | None:
        """An idle helper, or None (the caller then works inline)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if len(self._all) < self._max:
                helper = Helper(self, f"davbackup-chunker-{len(self._all)}")
                self._all.append(helper)
                return helper
        return None

    def _give_back(self, helper: Helper) -> None:
        with self._lock:
            self._idle.append(helper)

    def close(self) -> None:
        with self._lock:
            helpers, self._all, self._idle = self._all, [], []
        for helper in helpers:
            helper.stop()
