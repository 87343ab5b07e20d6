"""A bounded local cache of whole packs for a remote pack store (DESIGN.md §6.1).

Pack names are never reused and a pack's bytes never change, so a cached copy can
never be stale: at worst it holds a pack that gc has since deleted, which nothing
points at any more. Entries are whole packs as files ``ROOT/<name>.pack``; the
least recently read ones are removed once the total passes ``max_bytes``. A pack
this process wrote enters the cache for free (its spool file is moved in); a pack
read for the first time is downloaded whole, so a download of a large file costs
one GET per pack instead of one per chunk.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Callable


class PackCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._entries: OrderedDict[str, int] = OrderedDict()  # name -> size, oldest first
        self._total = 0
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}
        found = []
        for path in root.glob("*.pack"):
            st = path.stat()
            found.append((st.st_atime, path.stem, st.st_size))
        for _atime, name, size in sorted(found):
            self._entries[name] = size
            self._total += size
        for leftover in root.glob("*.part"):
            leftover.unlink(missing_ok=True)
        self._shrink()

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.pack"

    @property
    def total_bytes(self) -> int:
        return self._total

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def read(self, name: str, offset: int, length: int) -> bytes | None:
        """The bytes if the pack is cached (short if the pack is), else None."""
        with self._lock:
            if name not in self._entries:
                return None
            self._entries.move_to_end(name)
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError:
            return None  # evicted meanwhile
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def adopt(self, name: str, path: Path) -> None:
        """Move a complete pack file (a writer's spool) into the cache."""
        size = path.stat().st_size
        if size > self.max_bytes:
            path.unlink(missing_ok=True)
            return
        os.replace(path, self._path(name))
        self._add(name, size)

    def fetch(
        self, name: str, download: Callable[[BinaryIO], None], offset: int, length: int
    ) -> bytes | None:
        """Download the whole pack (one thread per pack does it), then read from it."""
        with self._lock:
            gate = self._fetching.setdefault(name, threading.Lock())
        with gate:
            if name not in self._entries:
                part = self.root / f"{name}.{threading.get_ident()}.part"
                try:
                    with open(part, "wb") as f:
                        download(f)
                    size = part.stat().st_size
                    if size > self.max_bytes:
                        return None
                    os.replace(part, self._path(name))
                finally:
                    part.unlink(missing_ok=True)
                self._add(name, size)
        with self._lock:
            self._fetching.pop(name, None)
        return self.read(name, offset, length)

    def _add(self, name: str, size: int) -> None:
        with self._lock:
            old = self._entries.pop(name, None)
            self._total -= old or 0
            self._entries[name] = size
            self._total += size
        self._shrink()

    def _shrink(self) -> None:
        while True:
            with self._lock:
                if self._total <= self.max_bytes or not self._entries:
                    return
                name, size = self._entries.popitem(last=False)
                self._total -= size
            self._path(name).unlink(missing_ok=True)  # open readers keep their fd

    def evict(self, name: str) -> None:
        with self._lock:
            size = self._entries.pop(name, None)
            if size is None:
                return
            self._total -= size
        self._path(name).unlink(missing_ok=True)
