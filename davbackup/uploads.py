"""Resumable upload sessions (DESIGN.md §13): from requests to session events.

A session collects the bytes of one file over several requests. Its state lives in
the catalog (davbackup/upload_sessions.py: the rows and the life cycle as a transition
table), so it survives a restart: the complete chunks received so far, plus a "tail" —
the bytes after the last chunk boundary, stored as one chunk of their own — so that
the held offset is exactly what arrived. When the last byte arrives the file version
is linked and the session removed in one transaction; the previous version stays
current until then. Only one request may append to a session at a time; a second one
gets :class:`~davbackup.errors.Locked`.

The settings that decide a session's fate are in :mod:`davbackup.upload_settings`,
the digests a client may promise in :mod:`davbackup.digests`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from davbackup import clock, crypto, upload_preempt, upload_sessions
from davbackup.digests import Digests, verify_digests
from davbackup.errors import (
    Conflict,
    DigestMismatch,
    LengthMismatch,
    Locked,
    NotFound,
    OffsetMismatch,
    TooLarge,
)
from davbackup.file_store import FileStore
from davbackup.fs import Entry, Namespace
from davbackup.tree import join_path, split_path
from davbackup.upload_sessions import GONE, NONE, Row, transition
from davbackup.upload_settings import UploadSettings, store_settings
from davbackup.writer import FileWriter

READ_SIZE = 1024 * 1024
#: seconds between two looks for any session at all while some may exist (discard_path)
NONE_RECHECK = 1.0
PATH_AD = b"davbackup-upload-path-v1"

class BodyReader(Protocol):
    def read(self, n: int = -1) -> bytes: ...


@dataclass(frozen=True)
class UploadSession:
    id: str
    user: str
    path: str
    protocol: str
    total: int | None
    received: int
    created: float
    updated: float
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AppendResult:
    offset: int  # bytes held after this request
    entry: Entry | None  # the committed file when the upload completed
    interrupted: bool  # the body ended early (dropped connection)


class UploadManager:
    """The life cycle of upload sessions: create, append, complete, cancel, expire."""

    def __init__(self, store: FileStore, namespace: Callable[[str], Namespace], *, path_key: bytes, seal_key: bytes,
                 settings: UploadSettings) -> None:
        """``store``: the catalog, chunks and writers the namespaces share; ``namespace(user)``:
        a user's namespace, where a completed upload is linked; ``path_key`` and
        ``seal_key``: the keys that hash and seal a session's path (DESIGN.md §13);
        ``settings``: those recorded in the catalog (davbackup/upload_settings.py)."""
        self._store = store
        self._catalog = store.catalog
        self._namespace = namespace
        self.settings = settings
        self._active: set[str] = set()
        self._active_lock = threading.Lock()
        self._path_key = path_key
        self._seal_key = seal_key
        #: no session existed when last looked, and this process has begun none since
        #: (see :meth:`_may_have_sessions`); ``_begun`` counts the creations begun
        self._none_seen = False
        self._begun = 0
        self._none_checked = -NONE_RECHECK

    def configure(self, settings: UploadSettings) -> None:
        """Adopt the server's settings and record them in the catalog, so that every
        other process (gc) applies the same session lifetime."""
        store_settings(self._catalog, settings)
        self.settings = settings

    @property
    def ttl(self) -> float:
        return self.settings.session_ttl

    # -- lookup ------------------------------------------------------------------

    def _path_hash(self, path: str) -> bytes:
        return crypto.keyed_hash(self._path_key, b"upload\x00" + path.encode("utf-8"), 16)

    def _row_to_session(self, row: Row) -> UploadSession:
        sid, user, path_enc, protocol, total, received, created, updated, meta = row
        path = crypto.open_small(self._seal_key, path_enc, PATH_AD).decode("utf-8")
        return UploadSession(sid, user, path, protocol, total, received, created, updated, json.loads(meta))

    def _expired(self, session: UploadSession, now: float) -> bool:
        return session.updated + self.ttl < now

    def get(self, session_id: str, user: str) -> UploadSession:
        row = upload_sessions.get(self._catalog.reader(), session_id)
        if row is None or row[1] != user:
            raise NotFound(GONE)
        session = self._row_to_session(row)
        if self._expired(session, clock.now()):
            self._end(session.id, "expire", missing_ok=True)
            raise NotFound("the upload session expired")
        return session

    def find(self, user: str, path: str, protocol: str) -> UploadSession | None:
        path = join_path(split_path(path))
        rows = upload_sessions.for_path(self._catalog.reader(), user, self._path_hash(path), protocol)
        now = clock.now()
        for row in rows:
            session = self._row_to_session(row)
            if self._expired(session, now):
                self._end(session.id, "expire", missing_ok=True)
                continue
            return session
        return None

    # -- life cycle ----------------------------------------------------------------

    def create(self, user: str, path: str, protocol: str, total: int | None, meta: dict[str, Any] | None = None, *,
               single: bool = False) -> UploadSession:
        """A new session; with ``single``, the live session of this protocol for ``path``
        if a concurrent request created one since the caller looked (one per path)."""
        transition(NONE, "create")
        path = join_path(split_path(path))
        ns = self._namespace(user)
        ns.check_writable(path)
        existing = ns.lookup(path)
        if existing is not None and existing.is_dir:
            raise Conflict(f"{path}: a folder stands there")
        parent = ns.lookup(path.rsplit("/", 1)[0] or "/")
        if parent is None or not parent.is_dir:
            raise Conflict(f"{path}: the parent folder does not exist")
        self.check_length(total)
        sid = secrets.token_urlsafe(24)
        now = clock.now()
        path_enc = crypto.seal_small(self._seal_key, path.encode("utf-8"), PATH_AD)
        meta_text = json.dumps(meta or {})
        limit = self.settings.max_sessions_per_user
        self._note_creation()

        def txn(conn: sqlite3.Connection) -> UploadSession:
            if single:
                for row in upload_sessions.for_path(conn, user, self._path_hash(path), protocol):
                    found = self._row_to_session(row)
                    if not self._expired(found, now):
                        return found
                    upload_sessions.end(conn, found.id, "expire")
            upload_sessions.create(conn, sid, user, self._path_hash(path), path_enc, protocol, total, now, meta_text,
                                   limit=limit, idle_since=now - self.ttl)
            return UploadSession(sid, user, path, protocol, total, 0, now, now, meta or {})

        try:
            return self._catalog.write(txn)
        finally:
            self._note_creation()  # again: a check that ran during the commit saw no session

    def cancel(self, session: UploadSession) -> None:
        """End the session; its chunks become garbage. :class:`NotFound` if it is gone."""
        with self._exclusive(session.id):
            self._end(session.id, "cancel")

    def discard_path(self, user: str, path: str) -> int:
        """A whole-file write supersedes every session for the path; returns how many.

        Nearly every PUT finds none: while no session exists at all that is known
        without a query (:meth:`_may_have_sessions`), else it is seen with a read, and
        only a path that has sessions costs a write transaction (which looks again). A
        session started after the read is one started after this call, as it would be
        after the transaction."""
        if not self._may_have_sessions():
            return 0
        path_hash = self._path_hash(join_path(split_path(path)))
        if not upload_sessions.any_for_path(self._catalog.reader(), user, path_hash):
            return 0
        return self._catalog.write(lambda conn: upload_sessions.cancel_for_path(conn, user, path_hash))

    def _note_creation(self) -> None:
        with self._active_lock:
            self._begun += 1
            self._none_seen = False

    def _may_have_sessions(self) -> bool:
        """False only if no session can exist: none did when last looked (at most once
        every NONE_RECHECK seconds) and this process has begun creating none since.
        Only the process holding the writer lock creates sessions of a catalog that
        is not shared; with a shared catalog other nodes do, so it is always True."""
        if self._none_seen:
            return False
        if self._catalog.shared:
            return True
        now = time.monotonic()
        if now - self._none_checked < NONE_RECHECK:
            return True
        self._none_checked = now
        begun = self._begun
        if upload_sessions.any_session(self._catalog.reader()):
            return True
        with self._active_lock:
            if self._begun == begun:  # no creation began (or committed) while looking
                self._none_seen = True
        return not self._none_seen

    def _end(self, session_id: str, event: str, *, missing_ok: bool = False) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            try:
                upload_sessions.end(conn, session_id, event)
            except NotFound:
                if not missing_ok:
                    raise

        self._catalog.write(txn)

    def check_length(self, total: int | None) -> None:
        """Refuse a declared upload length that is negative or above :attr:`max_length`."""
        if total is None:
            return
        if total < 0:
            raise LengthMismatch("negative upload length")
        if total > self.settings.max_length:
            raise TooLarge(
                f"an upload of {total} bytes is larger than the limit of {self.settings.max_length} bytes"
            )

    def set_total(self, session: UploadSession, total: int) -> UploadSession:
        self.check_length(total)

        self._catalog.write(lambda conn: upload_sessions.set_total(conn, session.id, total))
        return UploadSession(session.id, session.user, session.path, session.protocol, total, session.received,
                             session.created, session.updated, session.meta)

    # -- appending -------------------------------------------------------------------

    class _Exclusive:
        def __init__(self, manager: "UploadManager", sid: str) -> None:
            self.manager, self.sid = manager, sid

        def __enter__(self) -> None:
            with self.manager._active_lock:
                if self.sid in self.manager._active:
                    raise Locked("another request is appending to this upload session")
                self.manager._active.add(self.sid)
            catalog = self.manager._catalog
            # With a shared catalog another node may be appending: a cluster-wide lock,
            # released by PostgreSQL also when that node dies.
            if catalog.shared and not catalog.try_lock(upload_preempt.lock_name(self.sid)):
                with self.manager._active_lock:
                    self.manager._active.discard(self.sid)
                raise Locked("another request (on another node) is appending to this upload session")

        def __exit__(self, *exc: object) -> None:
            catalog = self.manager._catalog
            if catalog.shared:
                catalog.unlock(upload_preempt.lock_name(self.sid))
            with self.manager._active_lock:
                self.manager._active.discard(self.sid)

    def _exclusive(self, sid: str) -> "UploadManager._Exclusive":
        return UploadManager._Exclusive(self, sid)

    # An IETF upload resumed through another node of a cluster (davbackup/upload_preempt.py)

    def stop_elsewhere(self, sid: str, wait: float) -> bool:
        """Stop an append of upload ``sid`` that runs on another node and wait up to
        ``wait`` seconds for it to end; True when none runs any more. Only for a
        session the request's user owns."""
        return upload_preempt.stop_elsewhere(self._catalog, sid, wait)

    def serve_stop_requests(self, stop_local: Callable[[str], None]) -> None:
        """In a cluster: call ``stop_local(sid)`` when another node asks this one to stop
        its append of upload ``sid`` (it must return at once)."""
        upload_preempt.serve_stop_requests(self._catalog, stop_local)

    def append(
        self,
        session: UploadSession,
        offset: int,
        body: BodyReader,
        length: int | None,
        *,
        allow_overlap: bool,
        complete: bool | None = None,
        digests: Digests | None = None,
    ) -> AppendResult:
        """Add ``length`` bytes (None: until the body ends) that start at ``offset``.

        ``allow_overlap``: bytes before the held offset are skipped (range PUT);
        otherwise the offset must match exactly (IETF draft). ``complete``: the
        client says whether this is the last part (IETF: only ``True`` completes);
        ``None`` (range PUT) completes the upload when the announced total is held.
        """
        with self._exclusive(session.id):
            session = self.get(session.id, session.user)  # fresh state
            held = session.received
            if offset > held or (offset < held and not allow_overlap):
                raise OffsetMismatch(f"offset {offset} does not match the {held} bytes held", held, offset)
            if session.total is not None and length is not None and offset + length > session.total:
                raise LengthMismatch(f"bytes {offset}+{length} run past the announced length {session.total}")
            writer = self._resume_writer(session)
            interrupted, persisted = self._receive(session, writer, body, length, skip=held - offset)
            received = writer.received
            # complete=None (range PUT): done when the announced total is held.
            # complete=True/False (IETF): only the client's word completes an upload.
            if complete is None:
                done = session.total is not None and received == session.total and not interrupted
            else:
                done = complete and not interrupted
            if complete is True and session.total is not None and received != session.total and not interrupted:
                writer.abort()
                raise LengthMismatch(f"upload marked complete at {received} bytes but {session.total} were announced")
            if done:
                entry = self._complete(session, writer, digests)
                return AppendResult(received, entry, False)
            self._checkpoint(session, writer, persisted, with_tail=True)
            writer.abort()
            return AppendResult(received, None, interrupted)

    def _receive(self, session: UploadSession, writer: FileWriter, body: BodyReader, length: int | None, *,
                 skip: int) -> tuple[bool, int]:
        """Feed ``length`` bytes of the body (None: all of it) to ``writer``, the first
        ``skip`` of them dropped (the session holds them already), with a checkpoint every
        ``checkpoint_bytes``. Returns (whether the body ended early, chunks persisted)."""
        persisted = len(writer.chunks)
        since = 0
        remaining = length
        try:
            while remaining is None or remaining > 0:
                want = READ_SIZE if remaining is None else min(READ_SIZE, remaining)
                data = body.read(want)
                if not data:
                    return remaining is not None, persisted
                if remaining is not None:
                    remaining -= len(data)
                if skip:
                    if len(data) <= skip:
                        skip -= len(data)
                        continue
                    data, skip = data[skip:], 0
                if session.total is not None and writer.received + len(data) > session.total:
                    raise LengthMismatch(f"the body runs past the announced length {session.total}")
                writer.write(data)
                since += len(data)
                if since >= self.settings.checkpoint_bytes:
                    persisted = self._checkpoint(session, writer, persisted, with_tail=False)
                    since = 0
        except (OSError, EOFError):
            return True, persisted  # dropped connection: keep what arrived
        except BaseException:
            writer.abort()
            raise
        return False, persisted

    def _resume_writer(self, session: UploadSession) -> FileWriter:
        rows = upload_sessions.chunk_rows(self._catalog.reader(), session.id)
        chunks = [(o, n, c) for o, n, c, t in rows if not t]
        tails = [(o, n, c) for o, n, c, t in rows if t]
        writer = self._store.new_writer(chunks)
        writer.mark_existing([c for _, _, c in chunks])
        for _off, _n, cid in tails:
            writer.mark_existing([cid])
            writer.write(self._store.chunks.read(cid, None, f"upload of {session.path} (tail)"))
        if writer.received != session.received:
            writer.abort()
            raise Conflict(f"upload session of {session.path} is inconsistent; cancel it and start again")
        return writer

    def _checkpoint(self, session: UploadSession, writer: FileWriter, persisted: int, *, with_tail: bool) -> int:
        if with_tail:
            tail = writer.take_tail()
        else:
            writer.settle()
            tail = b""
        tail_ref = writer.store_tail(tail)
        new_chunks = writer.chunks[persisted:]
        base = writer.durable_offset
        received = base + len(tail)

        tail_row = (base, tail_ref[0], tail_ref[1]) if tail_ref is not None else None

        def persist(conn: sqlite3.Connection, now: float) -> None:
            # NotFound if cancelled or expired meanwhile
            upload_sessions.save_progress(conn, session.id, new_chunks, tail_row, received, now)

        writer.checkpoint(persist)  # with a tail this ends the request: the writer is dropped next
        return len(writer.chunks)

    def _complete(self, session: UploadSession, writer: FileWriter, digests: Digests | None) -> Entry:
        writer.finish_chunking()
        try:
            checksums = verify_digests(digests, writer, session.path)
        except DigestMismatch:
            writer.abort()
            self._end(session.id, "cancel", missing_ok=True)
            raise
        ns = self._namespace(session.user)

        def link(conn: sqlite3.Connection, vid: int, size: int, etag: str, now: float) -> Entry:
            upload_sessions.end(conn, session.id, "complete")  # NotFound if cancelled or expired meanwhile
            return ns.link_version(conn, session.path, vid, size, etag, now)

        return writer.commit(link, checksums=self._store.tree.seal_checksums(checksums))
