"""The catalog: one SQLite database in WAL mode (DESIGN.md §7).

It holds the namespace tree, file versions as ordered chunk lists, the chunk index,
packs, dead properties, locks, users and upload sessions. Reads use one connection
per thread; writes go through :meth:`Catalog.write`, which batches concurrent
transactions into one commit (group commit) and returns only once that commit is
durable (``synchronous=FULL``): nothing is acknowledged before its fsync.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from davbackup import chunklists
from davbackup.errors import DavBackupError, RepositoryError, StorageFull, StorageUnavailable, UnsupportedFormat

T = TypeVar("T")

SCHEMA_VERSION = 4

SCHEMA_V1 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users(
    name TEXT PRIMARY KEY,
    pw_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('rw', 'ro')),
    root_id INTEGER NOT NULL,
    created REAL NOT NULL);
CREATE TABLE nodes(
    id INTEGER PRIMARY KEY,
    parent_id INTEGER,
    name_hash BLOB NOT NULL,
    name_enc BLOB NOT NULL,
    is_dir INTEGER NOT NULL,
    version_id INTEGER,
    created REAL NOT NULL,
    modified REAL NOT NULL);
CREATE UNIQUE INDEX nodes_by_parent ON nodes(parent_id, name_hash);
CREATE INDEX nodes_by_version ON nodes(version_id) WHERE version_id IS NOT NULL;
CREATE TABLE versions(
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    created REAL NOT NULL,
    orphaned REAL,
    checksums BLOB);
CREATE INDEX versions_orphaned ON versions(orphaned) WHERE orphaned IS NOT NULL;
CREATE TABLE version_chunks(
    version_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    chunk_id BLOB NOT NULL,
    PRIMARY KEY (version_id, offset)) WITHOUT ROWID;
CREATE INDEX version_chunks_by_chunk ON version_chunks(chunk_id);
CREATE TABLE packs(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('open', 'sealed')),
    created REAL NOT NULL);
CREATE TABLE chunks(
    id BLOB PRIMARY KEY,
    pack_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    plain_len INTEGER NOT NULL,
    touched REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX chunks_by_pack ON chunks(pack_id);
CREATE TABLE props(
    node_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    value_enc BLOB NOT NULL,
    PRIMARY KEY (node_id, name)) WITHOUT ROWID;
CREATE TABLE locks(
    token TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    expire REAL NOT NULL,
    data TEXT NOT NULL);
CREATE INDEX locks_by_root ON locks(root);
CREATE TABLE upload_sessions(
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    path_hash BLOB NOT NULL,
    path_enc BLOB NOT NULL,
    protocol TEXT NOT NULL,
    total INTEGER,
    received INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}');
CREATE INDEX upload_sessions_by_path ON upload_sessions(user_name, path_hash);
CREATE TABLE session_chunks(
    session_id TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    chunk_id BLOB NOT NULL,
    is_tail INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, offset)) WITHOUT ROWID;
CREATE INDEX session_chunks_by_chunk ON session_chunks(chunk_id);
"""

# Version 2 (history, quotas; DESIGN.md §15): every node and property row carries the
# time its state began (``born``); replaced states move to ``node_history`` and
# ``props_history``; ``moments`` lists the seconds in which each user's tree changed;
# users get a quota and a running total of their live bytes.
SCHEMA_V2 = """
ALTER TABLE nodes ADD COLUMN born REAL NOT NULL DEFAULT 0;
UPDATE nodes SET born = coalesce((SELECT v.created FROM versions v WHERE v.id = nodes.version_id), created);
CREATE TABLE node_history(
    node_id INTEGER NOT NULL,
    owner INTEGER NOT NULL,
    parent_id INTEGER,
    name_hash BLOB NOT NULL,
    name_enc BLOB NOT NULL,
    is_dir INTEGER NOT NULL,
    version_id INTEGER,
    created REAL NOT NULL,
    modified REAL NOT NULL,
    born REAL NOT NULL,
    died REAL NOT NULL);
CREATE INDEX node_history_by_parent ON node_history(parent_id, name_hash, died);
CREATE INDEX node_history_by_node ON node_history(node_id, born);
CREATE INDEX node_history_by_version ON node_history(version_id) WHERE version_id IS NOT NULL;
CREATE INDEX node_history_by_owner ON node_history(owner, died);
ALTER TABLE props ADD COLUMN born REAL NOT NULL DEFAULT 0;
CREATE TABLE props_history(
    node_id INTEGER NOT NULL,
    owner INTEGER NOT NULL,
    name TEXT NOT NULL,
    value_enc BLOB NOT NULL,
    born REAL NOT NULL,
    died REAL NOT NULL);
CREATE INDEX props_history_by_node ON props_history(node_id, died);
CREATE INDEX props_history_by_owner ON props_history(owner, died);
CREATE TABLE moments(owner INTEGER NOT NULL, second INTEGER NOT NULL, PRIMARY KEY (owner, second)) WITHOUT ROWID;
ALTER TABLE users ADD COLUMN quota INTEGER;
ALTER TABLE users ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
"""


def _v2_totals(conn: sqlite3.Connection) -> None:
    """Each user's live bytes and the seconds their current states began in."""
    for (root,) in conn.execute("SELECT root_id FROM users").fetchall():
        sub = (
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id)"
        )
        used = conn.execute(
            f"{sub} SELECT coalesce(sum(v.size), 0) FROM sub JOIN nodes n ON n.id = sub.id"
            " JOIN versions v ON v.id = n.version_id",
            (root,),
        ).fetchone()[0]
        conn.execute("UPDATE users SET used=? WHERE root_id=?", (used, root))
        conn.execute(
            f"{sub} INSERT OR IGNORE INTO moments(owner, second)"
            " SELECT ?, CAST(n.born AS INTEGER) FROM sub JOIN nodes n ON n.id = sub.id",
            (root, root),
        )


Migration = str | Callable[[sqlite3.Connection], None]

# Migrations from version N to N+1, applied in order inside one transaction each.
# Version 3: chunk lists stored as shared segments (DESIGN.md §7.3, davbackup/chunklists.py).
# Also version 3: chunks found damaged (by a read or by check --read-data), so that a
# client uploading the same content stores a fresh copy (DESIGN.md §12.1).
SCHEMA_V3_DAMAGED = """
CREATE TABLE damaged_chunks(id BLOB PRIMARY KEY, found REAL NOT NULL, reason TEXT NOT NULL) WITHOUT ROWID;
"""
# Version 4: the metadata journal in the packs (DESIGN.md §20, davbackup/journal.py):
# records committed but not yet known synced, and the packs holding records and checkpoints.
SCHEMA_V4_JOURNAL = """
CREATE TABLE journal_outbox(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE journal_packs(
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('journal', 'checkpoint')),
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    created REAL NOT NULL);
"""
MIGRATIONS: dict[int, list[Migration]] = {
    1: [SCHEMA_V2, _v2_totals],
    2: [chunklists.migrate, SCHEMA_V3_DAMAGED],
    3: [SCHEMA_V4_JOURNAL],
}


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """The value of one ``meta`` key (None: not set). Each key belongs to the module
    that defines it (``uploads.session_ttl``: upload_settings.py, ``retention``:
    retention.py, ``row_auth``: tree.py, the journal's keys: journal.py)."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else str(row[0])


def write_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Inside a write transaction: set one ``meta`` key."""
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


_SQLITE_FULL = 13


def _as_catalog_error(exc: BaseException | None, what: str) -> DavBackupError:
    """A database error as davbackup's error: a full disk is :class:`StorageFull` (507)."""
    if isinstance(exc, DavBackupError):
        return exc
    code = getattr(exc, "sqlite_errorcode", None)
    detail = f"{what}: {exc}" if exc is not None else what
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return StorageFull(f"{what}: no space left for the catalog")
    if str(getattr(exc, "sqlstate", "") or "").startswith("08"):  # PostgreSQL: connection lost
        return StorageUnavailable(f"{what}: the catalog database does not answer ({exc})")
    return RepositoryError(detail)


class _Job:
    __slots__ = ("fn", "result", "error", "done")

    def __init__(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        self.fn = fn
        self.result: object = None
        self.error: BaseException | None = None
        self.done = False


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


class Catalog:
    #: whether other processes on other machines share this catalog (PostgreSQL)
    shared = False

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if not create and not self._exists():
            raise RepositoryError(f"{path}: catalog is missing")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.execute("PRAGMA cache_size=-16000")
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute("PRAGMA synchronous=FULL")
        self._cv = threading.Condition()
        self._queue: list[_Job] = []
        self._leader = False
        self._closed = False
        #: called right before each group COMMIT; set only by fault injection in tests
        self.fault_hook: Callable[[], None] | None = None
        #: the metadata journal (davbackup/journal.py), attached by the repository
        self.journal: Any = None
        self._migrate(create)

    def _exists(self) -> bool:
        return self.path.exists()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _migrate(self, create: bool) -> None:
        conn = self._writer
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            if not create:
                raise RepositoryError(f"{self.path}: not a davbackup catalog")
            # A new catalog is made the way an old one is upgraded: version 1, then
            # every migration, so the upgrade path is exercised by every repository.
            conn.execute("BEGIN IMMEDIATE")
            _run_script(conn, SCHEMA_V1)
            conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
            conn.execute("COMMIT")
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise UnsupportedFormat(
                f"{self.path}: catalog schema {version} is newer than this davbackup supports ({SCHEMA_VERSION})"
            )
        while version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for step in MIGRATIONS[version]:
                    if isinstance(step, str):
                        _run_script(conn, step)
                    else:
                        step(conn)
                version += 1
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def attach_journal(self, journal: Any) -> None:
        """From now on every group commit also writes its durable changes to ``journal``
        (its ``before_commit`` runs in the transaction, ``after_commit`` before the
        callers are answered)."""
        with self._cv:
            journal.install(self._writer)
            self.journal = journal

    # -- reading -----------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (autocommit: each statement sees the latest commit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA cache_size=-2000")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several queries that see one consistent state."""
        conn = self.reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    # -- writing -----------------------------------------------------------------

    # -- named locks ---------------------------------------------------------------

    def try_lock(self, name: str) -> bool:
        """Take a named lock across every process sharing the catalog (False: held
        elsewhere). Only a shared catalog has them (davbackup/catalog_pg.py); a local
        one is guarded by file locks in the repository directory instead."""
        raise NotImplementedError(f"{self.path}: named locks need a shared catalog")

    def unlock(self, name: str) -> None:
        raise NotImplementedError(f"{self.path}: named locks need a shared catalog")

    def lock_epoch(self) -> int:
        """How often the WebDAV locks changed; only a shared catalog counts (a local one
        has one server process, which holds its locks in memory)."""
        raise NotImplementedError(f"{self.path}: the lock epoch needs a shared catalog")

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; returns once the commit is durable.

        Concurrent callers are batched into one transaction (one fsync). Each job runs
        in its own savepoint, so an exception undoes that job only and is re-raised to
        its caller. If the transaction as a whole fails (COMMIT refused, SQLite rolled
        back on a full disk or an I/O error), every job of the batch gets an error:
        no caller ever returns as if committed unless the COMMIT succeeded.
        """
        job = _Job(fn)
        with self._cv:
            if self._closed:
                raise RepositoryError("the catalog is closed")
            self._queue.append(job)
            while not job.done:
                if not self._leader:
                    self._leader = True
                    batch, self._queue = self._queue, []
                    break
                self._cv.wait()
            else:
                return self._outcome(job)  # type: ignore[no-any-return]
        try:
            self._run_batch(batch)
        except BaseException as exc:  # never leave a job of the batch undecided
            for other in batch:
                if not other.done:
                    other.error = other.error or _as_catalog_error(exc, "catalog write failed")
                    other.done = True
        finally:
            with self._cv:
                self._leader = False
                self._cv.notify_all()
        return self._outcome(job)  # type: ignore[no-any-return]

    @staticmethod
    def _outcome(job: _Job) -> Any:
        assert job.done, "a catalog job returned before its batch was decided"
        if job.error is not None:
            raise job.error
        return job.result

    def _run_batch(self, batch: list[_Job]) -> None:
        # Longer than 60 lines on purpose: one transaction's steps (BEGIN, a savepoint per
        # job, the journal, COMMIT) and where each can fail, read top to bottom.
        conn = self._writer
        journal = self.journal
        try:
            if journal is not None:
                journal.before_batch(conn)  # the writer's new journal epoch, if one is due
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._recover_writer()
            self._fail(batch, _as_catalog_error(exc, "catalog busy or unwritable"))
            return
        for job in batch:
            try:
                conn.execute("SAVEPOINT job")
            except sqlite3.Error as exc:
                self._recover_writer()
                self._fail(batch, _as_catalog_error(exc, "catalog transaction failed"))
                return
            try:
                job.result = job.fn(conn)
                conn.execute("RELEASE job")
            except BaseException as exc:  # re-raised in the caller's thread
                job.error = exc
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    except sqlite3.Error:
                        pass
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (disk full, I/O error):
                # nothing of this batch committed, so every caller gets an error.
                cause = job.error if isinstance(job.error, sqlite3.Error) else None
                self._fail(batch, _as_catalog_error(cause, "catalog transaction aborted by SQLite; nothing was written"))
                return
        records: list[Any] = []
        try:
            if journal is not None:
                records = journal.before_commit(conn)
            if self.fault_hook is not None:
                self.fault_hook()  # davbackup/faults.py: may raise as a failed COMMIT would
            conn.execute("COMMIT")
        except BaseException as exc:
            if journal is not None:
                journal.after_rollback()
            self._recover_writer()
            self._fail(batch, _as_catalog_error(exc, "catalog commit failed; nothing was written"))
            if not isinstance(exc, (sqlite3.Error, DavBackupError)):
                raise
            return
        if records:
            try:
                journal.after_commit(records)
            except BaseException as exc:
                # Committed, but its journal record is not durable (not the server, whose
                # records are synced before COMMIT): not acknowledged.
                self._fail(batch, _as_catalog_error(exc, "catalog journal write failed"))
                if not isinstance(exc, DavBackupError):
                    raise
                return
        for job in batch:
            if isinstance(job.error, sqlite3.Error):
                job.error = _as_catalog_error(job.error, "catalog error")
            job.done = True

    @staticmethod
    def _fail(batch: list[_Job], error: DavBackupError) -> None:
        """The batch's transaction did not commit: every job fails (its own error kept
        if it had one that is not a database error)."""
        for job in batch:
            if job.error is None or isinstance(job.error, sqlite3.Error):
                job.error = error
            job.done = True

    def _recover_writer(self) -> None:
        """After a failed transaction: roll back what SQLite left open; if even that
        fails, replace the writer connection so the next batch starts clean."""
        conn = self._writer
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
            return
        except sqlite3.Error:
            pass
        try:
            conn.close()
        except sqlite3.Error:
            pass
        self._writer = self._connect()
        self._writer.execute("PRAGMA cache_size=-16000")
        self._writer.execute("PRAGMA synchronous=FULL")
        if self.journal is not None:
            self.journal.install(self._writer)

    def close(self) -> None:
        with self._cv:
            self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass
            self._readers.clear()
        self._writer.close()
