"""Pack storage in an S3-compatible object store (DESIGN.md §6.1).

Objects are immutable and there is no append, while a pack writer appends to an
open pack for minutes and must make small group commits durable at once. So a pack
being written lives in a local *spool* file and reaches the store in two forms::

    PREFIX/packs/xx/<name>.pack                          a finished pack: one object
    PREFIX/packs/xx/<name>.seg/<start:016x>-<end:016x>   bytes start..end-1 of a pack
                                                         that was synced before it was full

``sync(upto)`` uploads the bytes since the last sync as one segment object (one PUT
per group commit, shared by every writer waiting in it); ``finish()`` (a full pack,
no more appends) and ``close()`` upload the whole spool as ``<name>.pack`` (multipart
when large) and only then delete the segments. A pack that filled up without an
intermediate sync (a large upload) is uploaded once, straight as ``.pack``.

Readers prefer ``.pack``; a pack left in segment form by a crash stays readable as
the union of its segments (exactly the synced bytes). Reads are ranged GETs, or
``pread`` of the spool while this process still has the pack open, or of the
optional bounded local cache (:class:`PackCache`). Without the cache, a reader of a
file keeps ranged GETs of its next chunks in flight on :meth:`prefetch_pool`
(:mod:`davbackup.prefetch`), and other reads that continue the previous one fetch
whole windows ahead (:mod:`davbackup.readahead`).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from davbackup.errors import StorageUnavailable
from davbackup.pack import PACK_MAGIC
from davbackup.prefetch import PrefetchPool
from davbackup.readahead import ReadAhead
from davbackup.s3 import PART_SIZE, ObjectMissing, ObjectStore, RangeNotSatisfiable, S3Url, StreamingUpload
from davbackup.storage import PackMissing
from davbackup.storage_cache import PackCache

log = logging.getLogger(__name__)

PACKS = "packs/"
#: threads fetching ranges ahead for readers, and the bytes those ranges may hold at
#: once, shared by all readers (prefetch.py)
PREFETCH_THREADS = 4
PREFETCH_BYTES = 64 * 1024 * 1024


def pack_key(name: str) -> str:
    return f"{PACKS}{name[:2]}/{name}.pack"


def segment_prefix(name: str) -> str:
    return f"{PACKS}{name[:2]}/{name}.seg/"


def segment_key(name: str, start: int, end: int) -> str:
    return f"{segment_prefix(name)}{start:016x}-{end:016x}"


Segments = list[tuple[int, int, str]]  # (start, end, key), sorted


def _parse_segments(name: str, keys: list[str]) -> Segments:
    out: Segments = []
    prefix = segment_prefix(name)
    for key in keys:
        start, _, end = key[len(prefix) :].partition("-")
        try:
            out.append((int(start, 16), int(end, 16), key))
        except ValueError:
            continue  # not ours
    return sorted(out)


class S3Appender:
    """A pack being written: appends go to a local spool; syncs upload segments."""

    def __init__(self, storage: "S3PackStorage", name: str, spool: Path) -> None:
        self.name = name
        self._storage = storage
        self._spool = spool
        self._fd = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(self._fd, PACK_MAGIC)
        self._size = len(PACK_MAGIC)
        self._durable = 0
        self._segments: list[str] = []
        self._whole = False  # uploaded as <name>.pack
        self._finished = False
        self._closed = False
        self._abandoned = False
        #: the whole pack going up in parts as it fills (from PART_SIZE on)
        self._streaming: StreamingUpload | None = None
        self._append_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd_lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def append(self, data: bytes | bytearray) -> int:
        with self._append_lock:
            if self._finished:
                raise ValueError(f"pack {self.name} is finished: no more appends")
            offset = self._size
            view = memoryview(data)
            pos = offset
            while view:
                written = os.pwrite(self._fd, view, pos)
                view = view[written:]
                pos += written
            self._size = offset + len(data)
            if self._size >= PART_SIZE:
                if self._streaming is None:
                    self._streaming = StreamingUpload(self._storage.store, pack_key(self.name), self._read_spool)
                self._streaming.written(self._size)
            return offset

    def finish_is_cheaper(self, upto: int) -> bool:
        """Whether making bytes ``0..upto`` durable costs less by finishing the pack
        (most of it is up already, in parts) than by a segment of at least a part."""
        return self._streaming is not None and upto - self._durable >= PART_SIZE

    def read_local(self, offset: int, length: int) -> bytes | None:
        """The bytes from the spool, or None once the pack is closed (read the store)."""
        with self._fd_lock:
            if self._fd < 0:
                return None
            return os.pread(self._fd, length, offset)

    def _read_spool(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise EOFError(f"spool of pack {self.name}: short read at {offset}")
        return data

    def sync(self, upto: int | None = None) -> None:
        """Return once bytes ``0..upto`` (all so far by default) are in the store."""
        if upto is None:
            upto = self._size
        if self._durable >= upto:
            return
        with self._sync_lock:
            if self._durable >= upto:
                return  # another thread's upload covered our bytes: group commit
            self._refuse_if_abandoned()
            start, end = self._durable, self._size
            key = segment_key(self.name, start, end)
            self._storage.store.put_parts(key, end - start, lambda off, n: self._read_spool(start + off, n))
            self._segments.append(key)
            self._durable = end

    def finish(self) -> None:
        """No more appends: upload the whole pack as one object, then drop its segments."""
        with self._append_lock:
            self._finished = True
        with self._sync_lock:
            if self._whole:
                return
            self._refuse_if_abandoned()
            size = self._size
            streaming, self._streaming = self._streaming, None
            if streaming is not None:
                streaming.complete(size)  # aborted if it fails: a retry uploads anew
            else:
                self._storage.store.put_parts(pack_key(self.name), size, self._read_spool)
            self._whole = True
            self._durable = size
            if self._segments:
                self._storage.store.delete(self._segments)
                self._segments.clear()

    def _refuse_if_abandoned(self) -> None:
        if self._abandoned:
            raise StorageUnavailable(f"pack {self.name} was given up: it takes no more bytes")

    def abandon(self) -> None:
        """Never write to this pack again, not even what was appended since the last
        sync: the spool is dropped, and the pack stays as earlier syncs left it in the
        store (segment form). For a node that lost its cluster locks (DESIGN.md §7.5)."""
        with self._append_lock:
            self._finished = True
        with self._sync_lock:
            self._abandoned = True
            if self._streaming is not None:
                self._streaming.abort()
                self._streaming = None
        if self._closed:
            return
        self._closed = True
        with self._fd_lock:
            os.close(self._fd)
            self._fd = -1
        self._storage._closed_appender(self, self._spool, keep=False)

    def close(self) -> None:
        """Finish the pack. If the store fails the whole-pack upload, the pack stays in
        segment form as long as every byte is durable there; else this raises, and
        the spool stays open (readable) for a later close to try again."""
        if self._closed:
            return
        try:
            self.finish()
        except StorageUnavailable as exc:
            self.sync()  # raises if not even the segments can be written
            log.warning("pack %s stays in segment form: %s", self.name, exc.message)
        self._closed = True
        with self._fd_lock:
            os.close(self._fd)
            self._fd = -1
        self._storage._closed_appender(self, self._spool)


class S3PackStream(io.RawIOBase):
    """A seekable reader over one pack (what ``scan_pack`` walks), via ranged reads."""

    def __init__(self, storage: "S3PackStorage", name: str) -> None:
        self._storage = storage
        self._name = name
        self._size = storage.size(name)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = self._storage.read(self._name, self._pos, want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class S3PackStorage:
    """Packs as objects under ``s3://bucket/prefix/packs/`` (see the module docstring).

    ``spool_dir`` holds the spools of packs being written (at most a pack's size
    each); ``cache`` optionally keeps whole packs locally for fast reads.
    """

    def __init__(
        self, store: ObjectStore, spool_dir: Path, cache: PackCache | None = None, *, writer: bool = False
    ) -> None:
        """``writer``: this process is the repository's one writer (it holds the writer
        lock), so spool files found now are a crashed predecessor's and are removed
        (what they held that was ever synced is in the store)."""
        self.store = store
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if writer:
            for leftover in spool_dir.glob("*.spool"):
                leftover.unlink(missing_ok=True)
        self.cache = cache
        #: without a cache, sequential reads of a pack fetch 8 MiB windows ahead
        self._readahead = ReadAhead(self.store.get_range) if cache is None else None
        self._prefetch: PrefetchPool | None = None
        self._open: dict[str, S3Appender] = {}
        self._segments: dict[str, Segments] = {}  # packs seen in segment form
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, spool_dir: Path, cache: PackCache | None = None) -> "S3PackStorage":
        store = ObjectStore(S3Url.parse(url))
        store.check_bucket()
        return cls(store, spool_dir, cache)

    # -- writing -------------------------------------------------------------------

    def create(self, name: str) -> S3Appender:
        with self._lock:
            if name in self._open:
                raise FileExistsError(f"pack {name} exists")
        if self.store.head(pack_key(name)) is not None or self._list_segments(name):
            raise FileExistsError(f"pack {name} exists")
        appender = S3Appender(self, name, self.spool_dir / f"{name}.spool")
        with self._lock:
            self._open[name] = appender
        return appender

    def _closed_appender(self, appender: S3Appender, spool: Path, keep: bool = True) -> None:
        """The spool of a closed pack goes to the cache (``keep``, if there is one)."""
        with self._lock:
            if self._open.get(appender.name) is appender:
                del self._open[appender.name]
            self._segments.pop(appender.name, None)
        if keep and self.cache is not None:
            self.cache.adopt(appender.name, spool)
        else:
            spool.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------

    def _list_segments(self, name: str) -> Segments:
        return _parse_segments(name, [o.key for o in self.store.list(segment_prefix(name))])

    def prefetch_pool(self) -> PrefetchPool | None:
        """The threads and byte budget readers fetch their next chunks with
        (:mod:`davbackup.prefetch`), or None with a local cache (reads are local once a
        pack is in it)."""
        if self.cache is not None:
            return None
        with self._lock:
            if self._prefetch is None:
                self._prefetch = PrefetchPool(self.read_range, PREFETCH_THREADS, PREFETCH_BYTES)
            return self._prefetch

    def read(self, name: str, offset: int, length: int) -> bytes:
        return self._read(name, offset, length, self._readahead)

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        """:meth:`read` without the read-ahead windows: a prefetching reader plans its
        ranges itself."""
        return self._read(name, offset, length, None)

    def _read(self, name: str, offset: int, length: int, readahead: ReadAhead | None) -> bytes:
        appender = self._open.get(name)
        if appender is not None:
            data = appender.read_local(offset, length)
            if data is not None:
                return self._exact(name, offset, length, data)
        if self.cache is not None:
            data = self.cache.read(name, offset, length)
            if data is None and name not in self._segments:
                try:
                    data = self.cache.fetch(name, lambda f: self.store.download(pack_key(name), f), offset, length)
                except ObjectMissing:
                    data = None  # in segment form, or gone: see below
            if data is not None:
                return self._exact(name, offset, length, data)
        if name not in self._segments:
            if readahead is not None:
                data = readahead.read(pack_key(name), offset, length)
                if data is not None:
                    return data
            try:
                data = self.store.get_range(pack_key(name), offset, length)
                return self._exact(name, offset, length, data)
            except RangeNotSatisfiable:
                raise EOFError(f"pack {name}: nothing at offset {offset}") from None
            except ObjectMissing:
                pass
        return self._read_segments(name, offset, length)

    @staticmethod
    def _exact(name: str, offset: int, length: int, data: bytes) -> bytes:
        if len(data) != length:
            raise EOFError(f"pack {name}: short read at {offset} ({len(data)} of {length} bytes)")
        return data

    def _read_segments(self, name: str, offset: int, length: int) -> bytes:
        """Read from a pack in segment form; re-list once if the segments changed
        (a writer may have added some, or finished the pack and deleted them)."""
        for attempt in range(2):
            segments = self._segments.get(name) if attempt == 0 else None
            if segments is None:
                segments = self._list_segments(name)
                if not segments:
                    with self._lock:
                        self._segments.pop(name, None)
                    if self.store.head(pack_key(name)) is not None:  # finished meanwhile
                        return self._read(name, offset, length, None)
                    raise PackMissing(name)
                with self._lock:
                    self._segments[name] = segments
            try:
                return self._gather(name, segments, offset, length)
            except (ObjectMissing, EOFError):
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _gather(self, name: str, segments: Segments, offset: int, length: int) -> bytes:
        out = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            best = None  # the segment holding pos that reaches furthest
            for start, stop, key in segments:
                if start <= pos < stop and (best is None or stop > best[1]):
                    best = (start, stop, key)
            if best is None:
                raise EOFError(f"pack {name}: no segment holds offset {pos}")
            take = min(end, best[1]) - pos
            try:
                piece = self.store.get_range(best[2], pos - best[0], take)
            except RangeNotSatisfiable as exc:
                raise EOFError(f"pack {name}: segment {best[2]} is shorter than its name") from exc
            if len(piece) != take:
                raise EOFError(f"pack {name}: segment {best[2]} is shorter than its name")
            out += piece
            pos += take
        return bytes(out)

    def open_stream(self, name: str) -> BinaryIO:
        return io.BufferedReader(S3PackStream(self, name), buffer_size=4 * 1024 * 1024)

    def _stat(self, name: str) -> tuple[int, float]:
        appender = self._open.get(name)
        if appender is not None:
            return appender.size, time.time()
        info = self.store.head(pack_key(name))
        if info is not None:
            return info.size, info.mtime
        segments = list(self.store.list(segment_prefix(name)))
        parsed = _parse_segments(name, [o.key for o in segments])
        if not parsed:
            raise PackMissing(name)
        return max(stop for _s, stop, _k in parsed), max(o.mtime for o in segments)

    def size(self, name: str) -> int:
        return self._stat(name)[0]

    def mtime(self, name: str) -> float:
        return self._stat(name)[1]

    def names(self) -> Iterator[str]:
        seen: set[str] = set()
        for info in self.store.list(PACKS):
            leaf = info.key[len(PACKS) + 3 :]  # after "xx/"
            if leaf.endswith(".pack"):
                name = leaf[:-5]
            elif ".seg/" in leaf:
                name = leaf.split(".seg/", 1)[0]
            else:
                continue
            if name not in seen:
                seen.add(name)
        with self._lock:
            seen.update(self._open)
        yield from sorted(seen)

    # -- deleting ------------------------------------------------------------------

    def forget(self, name: str) -> None:
        with self._lock:
            self._segments.pop(name, None)
        if self.cache is not None:
            self.cache.evict(name)
        if self._readahead is not None:
            self._readahead.forget(pack_key(name))

    def delete(self, name: str) -> None:
        self.forget(name)
        keys = [pack_key(name)] + [key for _s, _e, key in self._list_segments(name)]
        self.store.delete(keys)

    def close(self) -> None:
        with self._lock:
            appenders = list(self._open.values())
        for appender in appenders:
            appender.close()
        if self._readahead is not None:
            self._readahead.close()
        with self._lock:
            prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.shutdown()
        self.store.close()
