"""The chunk store: deduplicated, encrypted chunks in packs, indexed in the catalog.

Write ordering (DESIGN.md §8): a chunk's blob is appended to the active pack, the
pack is fsynced, and only then is the chunk's index row committed, in the same
transaction as the file version or upload session that references it. Chunks
appended but not yet committed are "pending": other writers deduplicate against
them in memory, and the pack holding them is not handed to gc (it stays ``open``)
until none are left.
"""

from __future__ import annotations

import errno
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from davbackup import chunk_index
from davbackup.catalog import Catalog
from davbackup.chunk_reads import ChunkId, ChunkReads, Location, storage_error
from davbackup.errors import DavBackupError, IntegrityError, StorageUnavailable
from davbackup.pack import HEADER_SIZE, BlobCodec, BlobHeader
from davbackup.storage import ZEROS_AHEAD, PackAppender, PackStorage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkRef:
    """A chunk as a file version sees it: its ID and plaintext length."""

    chunk_id: ChunkId
    length: int


@dataclass
class _Pending:
    location: Location
    plain_len: int
    holders: int


@dataclass
class ChunkBatch:
    """The chunks one writer referenced since its last durable checkpoint."""

    new: dict[ChunkId, tuple[Location, int]] = field(default_factory=dict)
    existing: set[ChunkId] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.new) + len(self.existing)


def _never(_upto: int) -> bool:
    return False


class ChunkStore(ChunkReads):
    def __init__(self, catalog: Catalog, storage: PackStorage, codec: BlobCodec, pack_target_size: int,
                 writable: bool) -> None:
        self.catalog = catalog
        self.storage = storage
        self.codec = codec
        self.pack_target_size = pack_target_size
        self.writable = writable
        self.rehash_on_read = False
        self._lock = threading.Lock()
        self._pending: dict[ChunkId, _Pending] = {}
        self._active: tuple[int, PackAppender] | None = None
        self._appenders: dict[int, PackAppender] = {}
        self._inflight: dict[int, int] = {}  # pack id -> pending chunks in it
        self._pack_names: dict[int, str] = {}
        self._places: dict[ChunkId, Location] = {}
        self._headers: dict[ChunkId, tuple[Location, BlobHeader]] = {}
        #: packs whose sync failed: bytes appended since their last good sync may be lost
        self._broken: dict[int, OSError] = {}
        #: broken packs nothing is pending in any more, and packs whose seal could not
        #: be written, to be sealed by release()
        self._unsealed: set[int] = set()
        #: the catalog's lock-session generation the open packs were opened under, and
        #: the packs given up because that session was lost since (DESIGN.md §7.5)
        self._generation = 0
        self._abandoned: set[int] = set()
        #: packs record() found open, and in which write transaction (see there)
        self._found_open: tuple[int | None, set[int]] = (None, set())
        if writable:
            self._recover()

    # -- startup -----------------------------------------------------------------

    def _recover(self) -> None:
        """Packs left open by a previous process are sealed: nothing is pending now."""
        self.catalog.write(chunk_index.seal_open_packs)

    # -- writing -----------------------------------------------------------------

    def put(self, data: bytes | memoryview, batch: ChunkBatch) -> ChunkRef:
        """Store one chunk (or find it stored) and note it in ``batch``."""
        return self.put_many([data], batch)[0]

    def put_many(self, chunks: Sequence[bytes | memoryview], batch: ChunkBatch) -> list[ChunkRef]:
        """:meth:`put` of consecutive chunks, the index asked about all at once (safe though
        older than a chunk's turn: the commit checks that deduplicated chunks exist, and a
        chunk stored meanwhile by another upload is found pending or stored twice)."""
        ids = [self.codec.chunk_id(data) for data in chunks]
        asked = [cid for cid in dict.fromkeys(ids) if cid not in batch.new and cid not in batch.existing]
        indexed = chunk_index.lookup_dedup(self.catalog.reader(), asked)
        return [self._put(data, cid, batch, indexed) for data, cid in zip(chunks, ids, strict=True)]

    def _put(self, data: bytes | memoryview, chunk_id: ChunkId, batch: ChunkBatch,
             indexed: dict[bytes, bool]) -> ChunkRef:
        ref = ChunkRef(chunk_id, len(data))
        if chunk_id in batch.new or chunk_id in batch.existing:
            return ref
        with self._lock:
            pending = self._pending.get(chunk_id)
            if pending is not None:
                pending.holders += 1
                batch.new[chunk_id] = (pending.location, pending.plain_len)
                return ref
        if indexed.get(chunk_id) is False:  # indexed and not found damaged
            batch.existing.add(chunk_id)
            return ref
        # New, or stored but found damaged: store this copy (self-healing, §12.1).
        blob = self.codec.seal(chunk_id, data)
        generation = self.catalog.holder_generation()  # raises while the cluster locks are lost
        with self._lock:
            if generation != self._generation:
                self._abandon_all(generation)
            pending = self._pending.get(chunk_id)
            if pending is not None:  # another writer stored it meanwhile
                pending.holders += 1
                batch.new[chunk_id] = (pending.location, pending.plain_len)
                return ref
            pack_id, appender = self._active_pack()
            try:
                offset = appender.append(blob)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    # a full disk: let this pack be sealed once its writers are gone, so
                    # gc can reclaim the chunks of the uploads that failed here
                    self._retire_active()
                raise storage_error(exc, f"cannot append to pack {appender.name}") from exc
            location = Location(pack_id, offset, len(blob) - HEADER_SIZE)
            self._pending[chunk_id] = _Pending(location, len(data), 1)
            self._inflight[pack_id] = self._inflight.get(pack_id, 0) + 1
            batch.new[chunk_id] = (location, len(data))
            if appender.size >= self.pack_target_size:
                self._retire_active()
        return ref

    def _active_pack(self) -> tuple[int, PackAppender]:
        if self._active is None:
            if not self.writable:
                raise IntegrityError("repository opened read-only: cannot store chunks")
            name = secrets.token_hex(16)

            # The row first: a pack file the catalog does not know is always gc's debris.
            created = time.time()
            pack_id = self.catalog.write(lambda conn: chunk_index.add_pack(conn, name, "open", created))
            appender = self.storage.create(name)
            if hasattr(appender, "preallocate"):  # local: zeros ahead, cheaper syncs (§8)
                appender.preallocate(ZEROS_AHEAD)
            self._pack_names[pack_id] = name
            self._appenders[pack_id] = appender
            self._active = (pack_id, appender)
        return self._active

    def _retire_active(self) -> None:
        """Called with the lock held: the next chunk starts a new pack.

        The full pack is finished (fsynced; uploaded whole to an object store) in
        the background now, so that the commit of a large
        upload does not wait for all of its data at once (its own sync then finds
        the bytes already covered)."""
        assert self._active is not None
        pack_id, appender = self._active
        self._active = None
        threading.Thread(target=self._finish_quietly, args=(pack_id, appender), name="davbackup-pack-sync",
                         daemon=True).start()

    def _finish_quietly(self, pack_id: int, appender: PackAppender) -> None:
        try:
            appender.finish()
        except OSError as exc:
            self._break(pack_id, appender, exc)  # the writers' own syncs then fail
        except (ValueError, DavBackupError):
            pass  # the writer's own sync reports the error

    def make_durable(self, batch: ChunkBatch) -> None:
        """fsync every pack holding a chunk of ``batch`` (before its rows commit)."""
        ends: dict[int, int] = {}
        for location, _ in batch.new.values():
            ends[location.pack_id] = max(ends.get(location.pack_id, 0), location.end)
        if ends:
            generation = self.catalog.holder_generation()
            if generation != self._generation:
                with self._lock:
                    if generation != self._generation:
                        self._abandon_all(generation)
        for pack_id, end in ends.items():
            if pack_id in self._abandoned:
                raise StorageUnavailable(
                    f"pack {self.pack_name(pack_id)} was given up: this node lost its catalog lock session"
                )
            broken = self._broken.get(pack_id)
            if broken is not None:
                raise storage_error(broken, f"an earlier sync of pack {self.pack_name(pack_id)} failed") from broken
            appender = self._appenders.get(pack_id)
            if appender is None:
                raise IntegrityError(f"pack {pack_id} is not open for writing")
            try:
                if getattr(appender, "finish_is_cheaper", _never)(end):
                    # An object store with most of the pack up in parts already: finish
                    # it (no segment that repeats those bytes); the next chunk opens a new pack.
                    with self._lock:
                        if self._active is not None and self._active[0] == pack_id:
                            self._active = None
                    appender.finish()
                else:
                    appender.sync(end)
            except OSError as exc:
                self._break(pack_id, appender, exc)
                raise storage_error(exc, f"cannot sync pack {appender.name}") from exc

    def _break(self, pack_id: int, appender: PackAppender, exc: OSError) -> None:
        """A sync of the pack failed. As with a failed fsync on Linux, what was appended
        since the last good sync may be lost even if a later sync succeeds, so the pack
        takes no more chunks and no writer may commit a chunk that is pending in it
        (their syncs fail from now on, new writers store those chunks afresh)."""
        with self._lock:
            if pack_id in self._broken:
                return
            self._broken[pack_id] = exc
            self._give_up(pack_id)
        log.error("sync of pack %s failed (%s): its unsynced chunks are given up", appender.name, exc)

    def _give_up(self, pack_id: int) -> None:
        """Called with the lock held: the pack takes no more chunks, and the chunks
        pending in it are forgotten (their writers fail, later writers store them
        afresh). Sealed by the next release(), never here: this can run inside a
        catalog transaction (small writes sync in the group commit), and sealing
        writes to the catalog."""
        if self._active is not None and self._active[0] == pack_id:
            self._active = None
        for cid in [cid for cid, p in self._pending.items() if p.location.pack_id == pack_id]:
            del self._pending[cid]
        self._inflight.pop(pack_id, None)
        self._unsealed.add(pack_id)

    def _abandon_all(self, generation: int) -> None:
        """Called with the lock held, once the catalog lock session was found lost
        (and taken again): while it was gone another node may have sealed the packs
        open here, and gc could rewrite them, so none of them takes another byte.
        Their spools are dropped without an upload; what was synced stays in the
        store (segment form) for the chunks already committed."""
        self._generation = generation
        for pack_id, appender in list(self._appenders.items()):
            self._give_up(pack_id)
            self._abandoned.add(pack_id)
            del self._appenders[pack_id]
            abandon = getattr(appender, "abandon", None)
            try:
                if abandon is not None:
                    abandon()
                else:
                    appender.close()
            except (OSError, DavBackupError) as exc:
                log.warning("closing pack %s failed: %s", appender.name, exc)
            log.warning("pack %s is given up: the catalog lock session was lost while it was open", appender.name)

    def record(self, conn: sqlite3.Connection, batch: ChunkBatch, now: float) -> None:
        """Inside a write transaction: index new chunks, check deduplicated ones exist.

        With a shared catalog, every pack a new chunk lies in must still be ``open``:
        a node that lost its lock session may have had its pack sealed by another
        node (and gc may rewrite it from then on). Write transactions of all nodes are
        serialised, so a seal is either seen here or comes after this commit; a pack
        found open stays open until then (this node seals only packs nothing is pending
        in), so the other writers of one group commit need not ask again."""
        if self.catalog.shared and batch.new:
            ids = {loc.pack_id for loc, _ in batch.new.values()}
            serial = getattr(conn, "transaction_serial", None)
            txn, known = self._found_open
            if serial is not None and serial == txn:
                ids -= known
            if not ids:
                sealed: set[int] = set()
            else:
                still_open = chunk_index.open_among(conn, ids)
                sealed = ids - still_open
                self._found_open = (serial, (known if serial == txn else set()) | still_open)
            if sealed:
                raise StorageUnavailable(
                    f"pack {self.pack_name(min(sealed))} was sealed by another node while this node had lost"
                    " its catalog lock session"
                )
        new = [
            (cid, loc.pack_id, loc.offset, loc.stored_len, plain_len, now)
            for cid, (loc, plain_len) in batch.new.items()
        ]
        chunk_index.record(conn, new, list(batch.existing), now)

    def release(self, batch: ChunkBatch) -> None:
        """After commit or abort: drop this writer's hold on pending chunks."""
        with self._lock:
            for cid, (location, _plain_len) in batch.new.items():
                pending = self._pending.get(cid)
                if pending is None or pending.location != location:
                    continue  # given up with a broken pack (and maybe stored again since)
                pending.holders -= 1
                if pending.holders <= 0:
                    del self._pending[cid]
                    pack_id = pending.location.pack_id
                    self._inflight[pack_id] -= 1
            done = [
                pid
                for pid, count in self._inflight.items()
                if count == 0 and (self._active is None or self._active[0] != pid)
            ]
            for pid in done:
                del self._inflight[pid]
            done += list(self._unsealed)
            self._unsealed.clear()
        for pid in done:
            self._seal(pid)
        batch.new.clear()
        batch.existing.clear()

    def _seal(self, pack_id: int) -> None:
        """Close a pack nothing is pending in. Never raises: it runs after the writes
        that used the pack were answered."""
        appender = self._appenders.pop(pack_id, None)
        if appender is not None:
            try:
                appender.close()
            except (OSError, DavBackupError) as exc:
                # Every committed chunk of this pack was made durable before its commit;
                # what a failed close loses was never referenced (aborted writes).
                log.warning("closing pack %s failed: %s", appender.name, exc)
        try:
            self.catalog.write(lambda conn: chunk_index.seal_packs(conn, [pack_id]))
        except DavBackupError as exc:  # gc never touches an open pack: try again later
            with self._lock:
                self._unsealed.add(pack_id)
            log.warning("pack %s could not be marked sealed (%s); tried again later", pack_id, exc)

    def retry_seals(self) -> None:
        """Seal the packs whose seal could not be written (a full disk: see _seal)."""
        if self._unsealed:
            self.release(ChunkBatch())

    def close(self) -> None:
        """Close own packs; a clean shutdown leaves none of them ``open``."""
        with self._lock:
            appenders = list(self._appenders.items())
            self._appenders.clear()
            self._active = None
        for _pid, appender in appenders:
            appender.close()
        if appenders:
            ids = [pid for pid, _ in appenders]
            self.catalog.write(lambda conn: chunk_index.seal_packs(conn, ids))
        self.storage.close()
