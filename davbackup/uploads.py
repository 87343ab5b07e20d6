"""Resumable upload sessions (DESIGN.md §13).

A session collects the bytes of one file over several requests. Its state lives in
the catalog (``upload_sessions`` + ``session_chunks``), so it survives a restart:
the complete chunks received so far, plus a "tail" — the bytes after the last chunk
boundary, stored as one chunk of their own — so that the held offset is exactly
what arrived. When the last byte arrives the file version is linked and the session
removed in one transaction; the previous version stays current until then.

Life cycle, as a transition table (``TRANSITIONS``)::

    (none)     --create-->   receiving
    receiving  --append-->   receiving
    receiving  --complete--> (removed)   the new version is current
    receiving  --cancel-->   (removed)   chunks become garbage
    receiving  --expire-->   (removed)   idle longer than the lifetime (request or gc)

Any other event is refused: an event on a session that is gone (completed,
cancelled, expired, or its user removed) raises :class:`~davbackup.errors.NotFound`.
The current state is read from the catalog inside the transaction that applies the
event, so two requests racing to end one session cannot both succeed. Only one
request may append to a session at a time; a second one gets
:class:`~davbackup.errors.Locked`.

This module is the only one that reads or writes ``upload_sessions`` and
``session_chunks``; gc, user removal and stats call the functions at the end.

The settings that decide a session's fate are in :mod:`davbackup.upload_settings`,
the digests a client may promise in :mod:`davbackup.digests`.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from davbackup import clock
from davbackup import crypto
from davbackup.digests import Digests, verify_digests
from davbackup.errors import (
    Conflict,
    DigestMismatch,
    LengthMismatch,
    Locked,
    NotFound,
    OffsetMismatch,
    TooLarge,
    TooManyUploads,
    UsageError,
)
from davbackup.fs import Entry
from davbackup.tree import join_path, split_path
from davbackup.upload_settings import UploadSettings, load_settings, store_settings
from davbackup.writer import FileWriter

if TYPE_CHECKING:
    from davbackup.repository import Repository

_log = logging.getLogger(__name__)

READ_SIZE = 1024 * 1024
PATH_AD = b"davbackup-upload-path-v1"

NONE = "none"
RECEIVING = "receiving"
STATES = (NONE, RECEIVING)
EVENTS = ("create", "append", "complete", "cancel", "expire")
TRANSITIONS: dict[tuple[str, str], str] = {
    (NONE, "create"): RECEIVING,
    (RECEIVING, "append"): RECEIVING,
    (RECEIVING, "complete"): NONE,
    (RECEIVING, "cancel"): NONE,
    (RECEIVING, "expire"): NONE,
}
GONE = "no such upload session (finished, cancelled or expired)"


def transition(state: str, event: str) -> str:
    """The next state. An event on a session that no longer exists is
    :class:`NotFound` (404: the client's upload URL is stale); any other illegal
    event is :class:`Conflict`."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        if state == NONE and event in EVENTS:
            raise NotFound(f"{GONE}: cannot {event}") from None
        raise Conflict(f"upload session: cannot {event} when {state}") from None


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
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AppendResult:
    offset: int  # bytes held after this request
    entry: Entry | None  # the committed file when the upload completed
    interrupted: bool  # the body ended early (dropped connection)


class UploadManager:
    """The life cycle of upload sessions: create, append, complete, cancel, expire."""

    def __init__(self, repo: "Repository", settings: UploadSettings | None = None) -> None:
        self.repo = repo
        if settings is None:
            try:
                settings = load_settings(repo.catalog.reader())
            except UsageError as exc:  # a damaged meta row must not keep check or restore from opening
                _log.warning("%s; using the default upload settings", exc)
                settings = UploadSettings()
        self.settings = settings
        self._active: set[str] = set()
        self._active_lock = threading.Lock()
        self._path_key = repo.keys.name_hash_key()
        self._seal_key = repo.keys.name_key()

    def configure(self, settings: UploadSettings) -> None:
        """Adopt the server's settings and record them in the catalog, so that every
        other process (gc) applies the same session lifetime."""
        store_settings(self.repo.catalog, settings)
        self.settings = settings

    @property
    def ttl(self) -> float:
        return self.settings.session_ttl

    # -- lookup ------------------------------------------------------------------

    def _path_hash(self, path: str) -> bytes:
        return crypto.keyed_hash(self._path_key, b"upload\x00" + path.encode("utf-8"), 16)

    def _row_to_session(self, row: tuple) -> UploadSession:
        sid, user, path_enc, protocol, total, received, created, updated, meta = row
        path = crypto.open_small(self._seal_key, path_enc, PATH_AD).decode("utf-8")
        return UploadSession(sid, user, path, protocol, total, received, created, updated, json.loads(meta))

    _COLUMNS = "id, user_name, path_enc, protocol, total, received, created, updated, meta"

    def _expired(self, session: UploadSession, now: float) -> bool:
        return session.updated + self.ttl < now

    def get(self, session_id: str, user: str) -> UploadSession:
        row = self.repo.catalog.reader().execute(
            f"SELECT {self._COLUMNS} FROM upload_sessions WHERE id=?", (session_id,)
        ).fetchone()
        if row is None or row[1] != user:
            raise NotFound(GONE)
        session = self._row_to_session(row)
        if self._expired(session, clock.now()):
            self._end(session.id, "expire", missing_ok=True)
            raise NotFound("the upload session expired")
        return session

    def find(self, user: str, path: str, protocol: str) -> UploadSession | None:
        path = join_path(split_path(path))
        rows = self.repo.catalog.reader().execute(
            f"SELECT {self._COLUMNS} FROM upload_sessions WHERE user_name=? AND path_hash=? AND protocol=?",
            (user, self._path_hash(path), protocol),
        ).fetchall()
        now = clock.now()
        for row in rows:
            session = self._row_to_session(row)
            if self._expired(session, now):
                self._end(session.id, "expire", missing_ok=True)
                continue
            return session
        return None

    # -- life cycle ----------------------------------------------------------------

    def create(self, user: str, path: str, protocol: str, total: int | None, meta: dict | None = None, *,
               single: bool = False) -> UploadSession:
        """A new session; with ``single``, the live session of this protocol for ``path``
        if a concurrent request created one since the caller looked (one per path)."""
        transition(NONE, "create")
        path = join_path(split_path(path))
        ns = self.repo.namespace(user)
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

        def txn(conn: sqlite3.Connection) -> UploadSession:
            if single:
                for row in conn.execute(
                    f"SELECT {self._COLUMNS} FROM upload_sessions WHERE user_name=? AND path_hash=? AND protocol=?",
                    (user, self._path_hash(path), protocol),
                ).fetchall():
                    found = self._row_to_session(row)
                    if not self._expired(found, now):
                        return found
                    _end(conn, found.id, "expire")
            (open_sessions,) = conn.execute(
                "SELECT COUNT(*) FROM upload_sessions WHERE user_name=? AND updated>=?", (user, now - self.ttl)
            ).fetchone()
            if open_sessions >= limit:
                raise TooManyUploads(
                    f"{user} has {open_sessions} open uploads (the limit is {limit}):"
                    " finish or cancel one first"
                )
            conn.execute(
                "INSERT INTO upload_sessions(id, user_name, path_hash, path_enc, protocol, total, received, state,"
                " created, updated, meta) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                (sid, user, self._path_hash(path), path_enc, protocol, total, RECEIVING, now, now, meta_text),
            )
            return UploadSession(sid, user, path, protocol, total, 0, now, now, meta or {})

        return self.repo.catalog.write(txn)

    def cancel(self, session: UploadSession) -> None:
        """End the session; its chunks become garbage. :class:`NotFound` if it is gone."""
        with self._exclusive(session.id):
            self._end(session.id, "cancel")

    def discard_path(self, user: str, path: str) -> int:
        """A whole-file write supersedes every session for the path; returns how many.

        Nearly every PUT finds none: that is seen with a read, and only a path that has
        sessions costs a write transaction (which looks again). A session started after
        the read is one started after this call, as it would be after the transaction."""
        path_hash = self._path_hash(join_path(split_path(path)))
        if self.repo.catalog.reader().execute(
                "SELECT 1 FROM upload_sessions WHERE user_name=? AND path_hash=? LIMIT 1",
                (user, path_hash)).fetchone() is None:
            return 0

        def txn(conn: sqlite3.Connection) -> int:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM upload_sessions WHERE user_name=? AND path_hash=?", (user, path_hash))]
            for sid in ids:
                _end(conn, sid, "cancel")
            return len(ids)

        return self.repo.catalog.write(txn)

    def _end(self, session_id: str, event: str, *, missing_ok: bool = False) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            try:
                _end(conn, session_id, event)
            except NotFound:
                if not missing_ok:
                    raise

        self.repo.catalog.write(txn)

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

        def txn(conn: sqlite3.Connection) -> None:
            transition(_state(conn, session.id), "append")
            conn.execute("UPDATE upload_sessions SET total=? WHERE id=?", (total, session.id))

        self.repo.catalog.write(txn)
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
            catalog = self.manager.repo.catalog
            # With a shared catalog another node may be appending: a cluster-wide lock,
            # released by PostgreSQL also when that node dies.
            if catalog.shared and not catalog.try_lock("upload:" + self.sid):
                with self.manager._active_lock:
                    self.manager._active.discard(self.sid)
                raise Locked("another request (on another node) is appending to this upload session")

        def __exit__(self, *exc: object) -> None:
            catalog = self.manager.repo.catalog
            if catalog.shared:
                catalog.unlock("upload:" + self.sid)
            with self.manager._active_lock:
                self.manager._active.discard(self.sid)

    def _exclusive(self, sid: str) -> "UploadManager._Exclusive":
        return UploadManager._Exclusive(self, sid)

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
            skip = held - offset
            interrupted = False
            persisted = len(writer.chunks)
            since = 0
            remaining = length
            try:
                while remaining is None or remaining > 0:
                    want = READ_SIZE if remaining is None else min(READ_SIZE, remaining)
                    data = body.read(want)
                    if not data:
                        if remaining is not None:
                            interrupted = True
                        break
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
                interrupted = True  # dropped connection: keep what arrived
            except BaseException:
                writer.abort()
                raise
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

    def _resume_writer(self, session: UploadSession) -> FileWriter:
        rows = self.repo.catalog.reader().execute(
            "SELECT offset, length, chunk_id, is_tail FROM session_chunks WHERE session_id=? ORDER BY offset",
            (session.id,),
        ).fetchall()
        chunks = [(o, n, c) for o, n, c, t in rows if not t]
        tails = [(o, n, c) for o, n, c, t in rows if t]
        writer = self.repo.new_writer(chunks)
        writer.mark_existing([c for _, _, c in chunks])
        for _off, _n, cid in tails:
            writer.mark_existing([cid])
            writer.write(self.repo.chunks.read(cid, None, f"upload of {session.path} (tail)"))
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

        def persist(conn: sqlite3.Connection, now: float) -> None:
            transition(_state(conn, session.id), "append")  # NotFound if cancelled or expired meanwhile
            conn.execute("DELETE FROM session_chunks WHERE session_id=? AND is_tail=1", (session.id,))
            conn.executemany(
                "INSERT OR REPLACE INTO session_chunks(session_id, offset, length, chunk_id, is_tail) VALUES (?, ?, ?, ?, 0)",
                [(session.id, o, n, c) for o, n, c in new_chunks],
            )
            if tail_ref is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO session_chunks(session_id, offset, length, chunk_id, is_tail)"
                    " VALUES (?, ?, ?, ?, 1)",
                    (session.id, base, tail_ref[0], tail_ref[1]),
                )
            conn.execute(
                "UPDATE upload_sessions SET received=?, updated=? WHERE id=?", (received, now, session.id)
            )

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
        ns = self.repo.namespace(session.user)

        def link(conn: sqlite3.Connection, vid: int, size: int, etag: str, now: float) -> Entry:
            _end(conn, session.id, "complete")  # NotFound if cancelled or expired meanwhile
            return ns.link_version(conn, session.path, vid, size, etag, now)

        return writer.commit(link, checksums=self.repo.tree.seal_checksums(checksums))


# -- the SQL of the life cycle ------------------------------------------------------
#
# Functions that take an open connection run inside the caller's transaction.


def _state(conn: sqlite3.Connection, session_id: str) -> str:
    found = conn.execute("SELECT 1 FROM upload_sessions WHERE id=?", (session_id,)).fetchone()
    return RECEIVING if found else NONE


def _end(conn: sqlite3.Connection, session_id: str, event: str) -> None:
    """Apply an ending event (complete, cancel, expire): the session's rows go."""
    transition(_state(conn, session_id), event)
    conn.execute("DELETE FROM session_chunks WHERE session_id=?", (session_id,))
    conn.execute("DELETE FROM upload_sessions WHERE id=?", (session_id,))


def expire_idle(conn: sqlite3.Connection, now: float, ttl: float) -> int:
    """gc: expire every session idle for longer than ``ttl``; returns how many."""
    ids = [r[0] for r in conn.execute("SELECT id FROM upload_sessions WHERE updated < ?", (now - ttl,))]
    for sid in ids:
        _end(conn, sid, "expire")
    return len(ids)


def remove_user_sessions(conn: sqlite3.Connection, user: str) -> int:
    """A user is being removed: cancel every session of theirs; returns how many."""
    ids = [r[0] for r in conn.execute("SELECT id FROM upload_sessions WHERE user_name=?", (user,))]
    for sid in ids:
        _end(conn, sid, "cancel")
    return len(ids)


def count_sessions(conn: sqlite3.Connection) -> int:
    """Unfinished sessions in the repository, expired ones not yet removed included."""
    return int(conn.execute("SELECT count(*) FROM upload_sessions").fetchone()[0])


def sessions_missing_chunks(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
    """(session ID, chunk ID) of session chunks missing from the chunk index (check)."""
    return conn.execute(
        "SELECT sc.session_id, sc.chunk_id FROM session_chunks sc"
        " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = sc.chunk_id)"
    ).fetchall()


#: SQL condition, for gc's chunk sweep: a session still holds ``chunks.id``
CHUNK_HELD_BY_SESSION = "EXISTS (SELECT 1 FROM session_chunks sc WHERE sc.chunk_id = chunks.id)"
