"""Pack storage: where pack files live, behind one small interface (DESIGN.md §6).

Guarantees a backend must give (and ``tests/core/test_core_storage.py`` checks for each):

1. ``create(name)`` makes a new, empty pack that no other pack shares a name with.
2. ``PackAppender.append`` returns the offset at which its bytes start; the bytes are
   readable at once by this process, and durable once ``sync()`` covering them returns.
3. After a crash, every byte covered by a completed ``sync()`` reads back unchanged;
   bytes appended after the last sync may be missing or torn (readers stop at them).
4. ``read(name, offset, length)`` returns exactly those bytes, or raises
   :class:`PackMissing` when the pack does not exist, or ``EOFError`` when short.
5. ``delete(name)`` removes a pack; callers delete only packs nothing points at.
6. ``PackAppender.finish()`` says no more appends will follow and makes everything
   durable; ``close()`` implies it. (An object store uploads the pack whole then.)

The local backend keeps packs as ``packs/<first two hex>/<name>.pack``; the S3
backend is :mod:`davbackup.storage_s3`. ``tests/core/test_storage_conformance.py`` runs the
same checks against both.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from davbackup.config import fsync_dir
from davbackup.pack import PACK_MAGIC


class PackMissing(Exception):
    """The pack named does not exist (deleted by gc, or lost)."""


class PackAppender(Protocol):
    name: str

    @property
    def size(self) -> int: ...

    def append(self, data: bytes | bytearray) -> int: ...

    def sync(self, upto: int | None = None) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


class PackStorage(Protocol):
    def create(self, name: str) -> PackAppender: ...

    def read(self, name: str, offset: int, length: int) -> bytes: ...

    def open_stream(self, name: str) -> BinaryIO: ...

    def size(self, name: str) -> int: ...

    def mtime(self, name: str) -> float: ...

    def names(self) -> Iterator[str]: ...

    def delete(self, name: str) -> None: ...

    def close(self) -> None: ...


#: how far a writer keeps its pack written with zeros past its contents (see
#: ``LocalAppender.preallocate``): the server's data and journal packs
ZEROS_AHEAD = 128 * 1024


class LocalAppender:
    """Appends to one pack file; concurrent ``sync`` calls share one fsync."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if os.write(self._fd, PACK_MAGIC) != len(PACK_MAGIC):
                raise OSError(errno.ENOSPC, "short write of the pack header")
        except OSError:  # a full disk: leave no empty pack file behind
            os.close(self._fd)
            path.unlink(missing_ok=True)
            raise
        self._size = len(PACK_MAGIC)
        self._synced = 0
        self._append_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._step = 0  # see preallocate()
        self._allocated = self._size
        fsync_dir(path.parent)

    def preallocate(self, step: int) -> None:
        """From now on keep the file written with zeros up to ``step`` bytes past the
        contents and sync with ``fdatasync``: an append inside those bytes changes
        neither the file's size nor its block map, so its sync writes its blocks and
        flushes the disk without a commit of the file system's journal, which waits
        behind every other file's metadata (DESIGN.md §20.7). Readers take the zeros
        for the end (a torn tail, ``pack.scan_pack``); ``close`` cuts them off."""
        self._step = step

    @property
    def size(self) -> int:
        return self._size

    def append(self, data: bytes | bytearray) -> int:
        """Write at the end; a failed (e.g. disk full) append leaves the size unchanged,
        so the next append overwrites the torn bytes instead of following them."""
        with self._append_lock:
            offset = self._size
            if self._step and offset + len(data) > self._allocated and len(data) < self._step:
                self._extend(offset + len(data))  # (a large append grows the file itself)
            view = memoryview(data)
            pos = offset
            try:
                while view:
                    written = os.pwrite(self._fd, view, pos)
                    view = view[written:]
                    pos += written
            except OSError:
                try:  # give the space of the torn bytes back at once (a full disk)
                    os.ftruncate(self._fd, offset)
                    self._allocated = offset
                except OSError:
                    pass
                raise
            self._size = offset + len(data)
            return offset

    def _extend(self, end: int) -> None:
        """Write zeros from ``end`` to a whole ``step`` past it (the bytes before ``end``
        are the append's own); if the disk has no room for them, go on without."""
        target = (end // self._step + 1) * self._step
        start = max(end, self._allocated)
        try:
            os.pwrite(self._fd, bytes(target - start), start)
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            self._allocated = self._size
            self._step = 0
            return
        self._allocated = target

    def sync(self, upto: int | None = None) -> None:
        if upto is None:
            upto = self._size
        if self._synced >= upto:
            return
        with self._sync_lock:
            if self._synced >= upto:
                return  # another thread's fsync covered our bytes: group commit
            target = self._size
            if self._step:
                os.fdatasync(self._fd)  # data and size; a timestamp alone commits no journal
            else:
                os.fsync(self._fd)
            self._synced = target

    def finish(self) -> None:
        self.sync()

    def close(self) -> None:
        # the sync lock too: a sync in flight (a retired pack's background finish) ends
        # before the descriptor goes, and one after it finds every byte synced here
        with self._append_lock, self._sync_lock:
            if self._fd >= 0:
                if self._allocated > self._size:
                    try:  # cut off the zeros written ahead
                        os.ftruncate(self._fd, self._size)
                    except OSError:
                        pass
                    self._allocated = self._size
                try:  # the descriptor goes even if fsync fails: an open file keeps its space
                    os.fsync(self._fd)
                    self._synced = self._size
                finally:
                    os.close(self._fd)
                    self._fd = -1


class LocalPackStorage:
    """Packs as files under one directory, with a small cache of open read handles."""

    def __init__(self, root: Path, max_open: int = 64) -> None:
        self.root = root
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._max_open = max_open

    def path(self, name: str) -> Path:
        return self.root / name[:2] / f"{name}.pack"

    def create(self, name: str) -> LocalAppender:
        path = self.path(name)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fsync_dir(self.root)
        return LocalAppender(name, path)

    def _fd(self, name: str) -> int:
        with self._lock:
            fd = self._fds.get(name)
            if fd is not None:
                self._fds.move_to_end(name)
                return fd
            try:
                fd = os.open(self.path(name), os.O_RDONLY)
            except FileNotFoundError as exc:
                raise PackMissing(name) from exc
            self._fds[name] = fd
            while len(self._fds) > self._max_open:
                _, old = self._fds.popitem(last=False)
                os.close(old)
            return fd

    def read(self, name: str, offset: int, length: int) -> bytes:
        data = os.pread(self._fd(name), length, offset)
        if len(data) != length:
            raise EOFError(f"pack {name}: short read at {offset}")
        return data

    def open_stream(self, name: str) -> BinaryIO:
        try:
            return open(self.path(name), "rb")
        except FileNotFoundError as exc:
            raise PackMissing(name) from exc

    def size(self, name: str) -> int:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError as exc:
            raise PackMissing(name) from exc

    def mtime(self, name: str) -> float:
        try:
            return self.path(name).stat().st_mtime
        except FileNotFoundError as exc:
            raise PackMissing(name) from exc

    def names(self) -> Iterator[str]:
        if not self.root.exists():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir():
                for f in sorted(sub.glob("*.pack")):
                    yield f.stem

    def drop_deleted(self) -> int:
        """Close cached read handles of packs whose file was deleted (by gc in another
        process): an open file keeps its disk space. Returns how many were closed."""
        with self._lock:
            gone = []
            for name, fd in self._fds.items():
                try:
                    if os.fstat(fd).st_nlink == 0:
                        gone.append(name)
                except OSError:
                    gone.append(name)
            for name in gone:
                os.close(self._fds.pop(name))
            return len(gone)

    def forget(self, name: str) -> None:
        with self._lock:
            fd = self._fds.pop(name, None)
            if fd is not None:
                os.close(fd)

    def delete(self, name: str) -> None:
        self.forget(name)
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
