"""The reading half of the chunk store: verified chunks, and verified ranges of them
(DESIGN.md §9).

Every read fetches the blob's bytes from its pack and verifies them now: a whole
chunk under its one tag (blob version 1) or all its segments (version 2), a range of
a version 2 blob under the tags of the segments that hold it. Nothing verified
earlier is trusted later; only where a chunk lies is remembered.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from davbackup import chunk_index
from davbackup.catalog import Catalog
from davbackup.errors import DavBackupError, IntegrityError, RepositoryError, StorageFull
from davbackup.pack import HEADER_SIZE, BlobCodec, BlobError, BlobHeader
from davbackup.storage import PackMissing, PackStorage

log = logging.getLogger(__name__)

ChunkId = bytes
T = TypeVar("T")

#: chunk places kept by ChunkStore.read (about 200 bytes each)
MAX_PLACES = 8192


@dataclass(frozen=True)
class Location:
    pack_id: int
    offset: int
    stored_len: int

    @property
    def end(self) -> int:
        return self.offset + HEADER_SIZE + self.stored_len


@dataclass(frozen=True)
class ChunkPart:
    """Verified plaintext of a chunk from byte ``start`` on (all of it: ``start`` 0 and
    ``len(data) == chunk_len``), and the chunk's length as its blob header says."""

    data: bytes
    start: int
    chunk_len: int


class _PrefetchedBad(BlobError):
    """Prefetched bytes failed verification: judged again on bytes read now."""


def storage_error(exc: OSError, what: str) -> DavBackupError:
    """A pack storage failure as davbackup's error: no space is 507, anything else 500."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{what}: no space left ({exc.strerror or exc})")
    return RepositoryError(f"{what}: {exc}")


class ChunkReads:
    """Mixed into :class:`davbackup.chunkstore.ChunkStore`, whose constructor sets these."""

    catalog: Catalog
    storage: PackStorage
    codec: BlobCodec
    #: recompute chunk IDs on every read (check --read-data always does)
    rehash_on_read: bool
    _pack_names: dict[int, str]
    #: where chunks were last read from (bounded): a ranged GET reads one chunk and
    #: its index lookup was a statement per request; a place gc has since moved the
    #: chunk from fails in read() exactly as a stale place a caller passes does
    _places: dict[ChunkId, Location]
    #: blob headers at their places, read and checked by read_part before: a segmented
    #: blob's header is the associated data of every segment's tag, so the tags verified
    #: in each read authenticate it again (and a stale one fails, then is read again);
    #: any other blob is read whole, its header with it, so a stale one costs nothing
    _headers: dict[ChunkId, tuple[Location, BlobHeader]]

    def pack_name(self, pack_id: int) -> str:
        name = self._pack_names.get(pack_id)
        if name is None:
            name = chunk_index.pack_name(self.catalog.reader(), pack_id)
            if name is None:
                raise IntegrityError(f"pack {pack_id} is not in the catalog")
            self._pack_names[pack_id] = name
        return name

    def learn_places(self, chunk_ids: list[ChunkId]) -> None:
        """Look up where these chunks lie in one statement and remember it for read()
        (instead of a statement per chunk; with a shared catalog each is a round trip)."""
        missing = [cid for cid in chunk_ids if cid not in self._places]
        if not missing:
            return
        found = chunk_index.locate_many(self.catalog.reader(), missing)
        if len(self._places) + len(found) > MAX_PLACES:
            self._places = {}
        for cid, row in found.items():
            self._places[cid] = Location(*row)

    def known_place(self, chunk_id: ChunkId) -> Location | None:
        """Where this chunk was last read from or looked up, if that is remembered."""
        return self._places.get(chunk_id)

    def locate(self, chunk_id: ChunkId) -> Location | None:
        row = chunk_index.locate(self.catalog.reader(), chunk_id)
        return Location(*row) if row else None

    def read(self, chunk_id: ChunkId, location: Location | None, context: str,
             via: Callable[[str, int, int], bytes | memoryview | None] | None = None) -> bytes:
        """The verified plaintext of a chunk; :class:`IntegrityError` names what failed.

        ``via(pack name, offset, length)``: the blob's bytes as already fetched (a
        reader's prefetch, :mod:`davbackup.prefetch`), or None to read them here; used
        for the first attempt only, and verified like bytes read here."""

        def whole(name: str, location: Location, first: bool) -> bytes:
            length = HEADER_SIZE + location.stored_len
            blob = via(name, location.offset, length) if via and first else None
            if blob is None:
                return self._open_whole(name, location, chunk_id)
            try:
                return self.codec.open(blob, expected_id=chunk_id, rehash=self.rehash_on_read)
            except BlobError as exc:
                raise _PrefetchedBad(str(exc)) from exc

        return self._verified(chunk_id, location, context, whole)

    def read_part(self, chunk_id: ChunkId, location: Location | None, start: int, end: int,
                  context: str) -> ChunkPart:
        """Verified plaintext of the chunk covering at least its bytes ``start..end-1``:
        of a segmented blob only the segments holding them are read and verified (one
        ``pread`` of the segments, and one of the header unless it was read at this
        place before), of any other blob all of it."""

        def part(name: str, location: Location, first_attempt: bool) -> ChunkPart:
            if self.rehash_on_read:
                plain = self._open_whole(name, location, chunk_id)
                return ChunkPart(plain, 0, len(plain))
            known = self._headers.get(chunk_id) if first_attempt else None
            header = known[1] if known is not None and known[0] == location else None
            if header is None:
                header = BlobHeader.parse(bytes(self.storage.read(name, location.offset, HEADER_SIZE)))
            if not header.segmented or header.stored_len != location.stored_len:
                plain = self._open_whole(name, location, chunk_id)
                if known is None:  # verified with the whole blob: next time no header read
                    self._remember(chunk_id, location, header)
                return ChunkPart(plain, 0, len(plain))
            first, stop = header.segment_span(start, end)
            at, length = header.segment_bytes(first, stop)
            sealed = self.storage.read(name, location.offset + HEADER_SIZE + at, length)
            try:
                data = self.codec.open_range(header, chunk_id, first, stop, sealed)
            except BlobError as exc:
                if known is not None:
                    raise _PrefetchedBad(str(exc)) from exc  # judged again with the header read now
                raise
            if known is None:
                self._remember(chunk_id, location, header)
            return ChunkPart(data, first << header.shift, header.plain_len)

        return self._verified(chunk_id, location, context, part)

    def _remember(self, chunk_id: ChunkId, location: Location, header: BlobHeader) -> None:
        if len(self._headers) >= MAX_PLACES:
            self._headers = {}
        self._headers[chunk_id] = (location, header)

    def _open_whole(self, name: str, location: Location, chunk_id: ChunkId) -> bytes:
        blob = self.storage.read(name, location.offset, HEADER_SIZE + location.stored_len)
        return self.codec.open(blob, expected_id=chunk_id, rehash=self.rehash_on_read)

    def _verified(self, chunk_id: ChunkId, location: Location | None, context: str,
                  fetch: Callable[[str, Location, bool], T]) -> T:
        """``fetch(pack name, location, first attempt)``: the verified result, at the
        remembered or given place and, if that fails, once more at the place the
        catalog has now (gc may have moved it)."""
        if location is None:
            location = self._places.get(chunk_id)
        for attempt in range(2):
            if location is None or attempt == 1:
                location = self.locate(chunk_id)
                if location is None:
                    raise IntegrityError(f"{context}: chunk {chunk_id.hex()[:16]} is missing from the index")
                if attempt == 1:
                    self._pack_names.pop(location.pack_id, None)  # its name as the catalog has it now
            try:
                name = self.pack_name(location.pack_id)
            except IntegrityError:
                if attempt == 0:  # a place gc has emptied since: the pack is gone
                    self._forget(chunk_id, location)
                    continue
                raise
            try:
                result = fetch(name, location, attempt == 0)
            except (PackMissing, EOFError) as exc:
                if attempt == 0:
                    self._forget(chunk_id, location)
                    continue  # gc may have moved the chunk (and given a new pack its pack's ID)
                self.mark_damaged(chunk_id, f"pack {name} is missing or short")
                raise IntegrityError(
                    f"{context}: chunk {chunk_id.hex()[:16]}: pack {name} is missing or short ({exc})"
                ) from exc
            except OSError as exc:
                raise storage_error(exc, f"{context}: cannot read pack {name}") from exc
            except BlobError as exc:
                if attempt == 0:
                    self._forget(chunk_id, location)
                    if isinstance(exc, _PrefetchedBad):
                        continue  # judged on bytes read here, at the place the catalog has now
                    fresh = self.locate(chunk_id)
                    if fresh is not None and (fresh != location or self.pack_name(fresh.pack_id) != name):
                        continue
                self.mark_damaged(chunk_id, f"failed verification in pack {name} at offset {location.offset}")
                raise IntegrityError(
                    f"{context}: chunk {chunk_id.hex()[:16]} in pack {name} at offset {location.offset}"
                    f" failed verification: {exc}"
                ) from exc
            if len(self._places) >= MAX_PLACES:
                self._places = {}
            self._places[chunk_id] = location
            return result
        raise AssertionError("unreachable")

    def _forget(self, chunk_id: ChunkId, location: Location) -> None:
        """Drop what a failed read relied on: the chunk's remembered place and the name
        of its pack (after gc a new pack may have the ID of a deleted one)."""
        self._places.pop(chunk_id, None)
        self._headers.pop(chunk_id, None)
        self._pack_names.pop(location.pack_id, None)

    def mark_damaged(self, chunk_id: ChunkId, reason: str) -> None:
        """Remember a chunk that failed to read, so the next upload of the same
        content stores a fresh copy (best effort: the read already failed)."""
        try:
            found = time.time()
            self.catalog.write(lambda conn: chunk_index.mark_damaged(conn, chunk_id, found, reason))
        except DavBackupError:
            log.warning("could not record damaged chunk %s", chunk_id.hex()[:16], exc_info=True)
