"""The space reserve: disk space kept back so that DELETE and gc work on a full disk.

Deleting needs space too: SQLite writes the change to its WAL before the old pages
are free, and gc copies live chunks into a new pack before it deletes the old one.
So the server keeps ``DIR/reserve``, a preallocated file (default 64 MiB, server
option ``storage.reserve_mib``), and follows three rules:

1. While the reserve is held, writes go ahead; when the disk fills up they fail
   with 507 (a pack append or a catalog commit that finds no space), nothing else.
2. A DELETE (or UNLOCK) that finds less free space than the reserve's size, and a
   ``davbackup gc`` that does, first release the reserve (delete the file). They
   then have at least that much room.
3. While the reserve is released, every request that would add data or catalog rows
   is refused with 507 before it touches the disk, so the released space stays
   available for deletions. The server takes the reserve back (and accepts writes
   again) as soon as the filesystem has room for it plus as much again, for
   example after a gc has freed space. No restart is needed.

On a full disk: delete what is not needed; deleted files stay in history for the
retention period (DESIGN.md §15.5), so shorten it (``davbackup history set
--keep-all DAYS ...``) if their space is needed now; then run ``davbackup gc --grace
0`` (gc's default grace of one hour while a server runs would keep what was just
deleted). The reserve should hold at least the live bytes of a pack gc rewrites
(half of a 64 MiB pack at the default threshold), or gc cannot compact on a full disk.

gc deletes pack files while the server may still hold them open for reading, and an
open file keeps its space. :class:`SpaceGuard` (the server's side) therefore closes
the handles of deleted packs every few seconds and always before it decides that
the disk is full.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from davbackup.errors import StorageFull

log = logging.getLogger(__name__)

NAME = "reserve"
DEFAULT_SIZE = 64 * 1024 * 1024


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class SpaceReserve:
    def __init__(self, root: Path, size: int = DEFAULT_SIZE) -> None:
        self.root = Path(root)
        self.path = self.root / NAME
        self.size = size
        self._lock = threading.Lock()

    def held(self) -> bool:
        """Whether the reserve file exists at its full size (another process, gc, may
        have released it)."""
        try:
            return self.size == 0 or self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def ensure(self) -> bool:
        """Hold the reserve, creating it if the filesystem has room for it twice over
        (so that writes can go on after taking it). Whether it is held now."""
        if self.held():
            return True
        with self._lock:
            if self.held():
                return True
            if free_bytes(self.root) < 2 * self.size:
                return False
            tmp = self.root / f"{NAME}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.posix_fallocate(fd, 0, self.size)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    log.warning("cannot create the space reserve %s: %s", self.path, exc)
                return False
            log.info("space reserve of %d MiB held in %s", self.size >> 20, self.path)
            return True

    def release_if_low(self) -> bool:
        """Release the reserve if less than its size is free; whether it was released."""
        if free_bytes(self.root) >= self.size or not self.path.exists():
            return False
        return self.release()

    def release(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk nearly full: space reserve %s released for a deletion or gc; "
                    "new writes are refused (507) until space is freed", self.path)
        return True


class SpaceGuard:
    """The server's use of the reserve: called before each write or deletion."""

    SWEEP_EVERY = 5.0

    def __init__(self, reserve: SpaceReserve, storage: Any, retry_seals: Callable[[], None] | None = None) -> None:
        """``retry_seals``: writes the seals of packs a full disk kept ``open`` (gc can
        reclaim nothing in an open pack); called before every deletion and before the
        disk is judged full."""
        self.reserve = reserve
        self._storage = storage
        self._swept = 0.0
        self._retry_seals = retry_seals

    def _sweep(self, now: bool = False) -> None:
        """Close read handles of packs gc deleted, so their space is given back."""
        drop = getattr(self._storage, "drop_deleted", None)
        if drop is not None and (now or time.monotonic() - self._swept >= self.SWEEP_EVERY):
            self._swept = time.monotonic()
            drop()

    def before_write(self) -> None:
        """Raise :class:`StorageFull` while the reserve cannot be held (rule 3)."""
        self._sweep()
        if self.reserve.held():
            return
        self._sweep(now=True)
        if self._retry_seals is not None:
            self._retry_seals()
        if not self.reserve.ensure():
            raise StorageFull("the disk is full: only DELETE and gc run until space is freed "
                              "(delete files, shorten history retention, run `davbackup gc --grace 0`)")

    def before_delete(self) -> None:
        """Release the reserve if the disk is nearly full (rule 2)."""
        self._sweep()
        self.reserve.release_if_low()
        if self._retry_seals is not None:
            self._retry_seals()
