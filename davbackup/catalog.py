"""The catalog: one SQLite database in WAL mode (DESIGN.md §7).

It holds the namespace tree, file versions as ordered chunk lists, the chunk index,
packs, dead properties, locks, users and upload sessions. Reads use one connection
per thread; writes go through :meth:`Catalog.write`, which batches concurrent
transactions into one commit (group commit) and returns only once that commit is
durable: nothing is acknowledged before its fsync. That is the WAL's fsync
(``synchronous=FULL``), except in the server, whose metadata journal is synced before
COMMIT and is the durable log: its catalog commits with ``synchronous=NORMAL`` and
syncs the WAL only for changes the journal cannot replay (DESIGN.md §20.7).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from davbackup.catalog_schema import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION, run_script
from davbackup.errors import DavBackupError, RepositoryError, StorageFull, StorageUnavailable, UnsupportedFormat

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "Catalog", "read_meta", "read_metas", "write_meta", "write_meta2"]


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """The value of one ``meta`` key (None: not set). Each key belongs to the module
    that defines it (``uploads.session_ttl``: upload_settings.py, ``retention``:
    retention.py, ``row_auth``: tree.py, the journal's keys: journal.py)."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else str(row[0])


def read_metas(conn: sqlite3.Connection, keys: tuple[str, ...]) -> dict[str, str]:
    """Several ``meta`` keys in one query: those that are set, by key."""
    marks = ", ".join("?" * len(keys))
    return {str(k): str(v) for k, v in conn.execute(f"SELECT key, value FROM meta WHERE key IN ({marks})", keys)}


def write_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Inside a write transaction: set one ``meta`` key."""
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


def write_meta2(conn: sqlite3.Connection, key1: str, value1: str, key2: str, value2: str) -> None:
    """Inside a write transaction: set two ``meta`` keys in one statement."""
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?), (?, ?)", (key1, value1, key2, value2))


_SQLITE_FULL = 13


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on an autocommit connection; on any error the
    transaction is rolled back (if SQLite has not already done so) and the error raised."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


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
    """One caller's transaction. ``wake`` is held from the start and released once by
    the thread that decides the job (its batch's leader), or to hand that caller the
    leadership of the next batch: a waiting caller is woken only for its own job."""

    __slots__ = ("fn", "result", "error", "done", "wake")

    def __init__(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        self.fn = fn
        self.result: object = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Lock()
        self.wake.acquire()


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
        self._synchronous = "FULL"  # NORMAL once a journal is the durable log (§20.7)
        self._writer.execute("PRAGMA synchronous=FULL")
        self._mutex = threading.Lock()  # guards _queue, _leader and _closed
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
            with write_transaction(conn):
                run_script(conn, SCHEMA_V1)
                conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise UnsupportedFormat(
                f"{self.path}: catalog schema {version} is newer than this davbackup supports ({SCHEMA_VERSION})"
            )
        while version < SCHEMA_VERSION:
            with write_transaction(conn):
                for step in MIGRATIONS[version]:
                    if isinstance(step, str):
                        run_script(conn, step)
                    else:
                        step(conn)
                version += 1
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))

    def attach_journal(self, journal: Any) -> None:
        """From now on every group commit also writes its durable changes to ``journal``
        (its ``before_commit`` runs in the transaction, ``after_commit`` before the
        callers are answered)."""
        with self._mutex:
            journal.install(self._writer)
            if journal.durable_log:
                self._synchronous = "NORMAL"
                self._writer.execute("PRAGMA synchronous=NORMAL")
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

    def holder_generation(self) -> int:
        """How often this process lost the session holding its cluster locks; only a
        shared catalog has one (davbackup/catalog_pg.py), a local one never changes."""
        return 0

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
        with self._mutex:
            if self._closed:
                raise RepositoryError("the catalog is closed")
            self._queue.append(job)
            lead = not self._leader
            self._leader = True
        if not lead:
            job.wake.acquire()  # the job was decided, or this caller leads the next batch
            if job.done:
                return self._outcome(job)  # type: ignore[no-any-return]
        with self._mutex:
            batch, self._queue = self._queue, []
        try:
            self._run_batch(batch)
        except BaseException as exc:  # never leave a job of the batch undecided
            for other in batch:
                if not other.done:
                    other.error = other.error or _as_catalog_error(exc, "catalog write failed")
                    other.done = True
        finally:
            with self._mutex:  # the leadership goes to the oldest waiting caller, if any
                successor = self._queue[0] if self._queue else None
                self._leader = successor is not None
            if successor is not None:
                successor.wake.release()
            for other in batch:
                if other is not job:
                    other.wake.release()
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
            if journal is not None and journal.before_batch(conn):  # the writer's new epoch, if due
                self._sync_wal()
            conn.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, OSError) as exc:
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
            self._settle_journal()
            self._fail(batch, _as_catalog_error(exc, "catalog commit failed; nothing was written"))
            if not isinstance(exc, (sqlite3.Error, DavBackupError)):
                raise
            return
        if journal is not None and journal.durable_log and journal.wal_sync_due:
            try:
                self._sync_wal()
            except OSError as exc:
                self._fail(batch, _as_catalog_error(exc, "catalog commit could not be synced"))
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

    def _sync_wal(self) -> None:
        """fsync the WAL: every commit so far is durable once this returns (for commits
        made with ``synchronous=NORMAL``, DESIGN.md §20.7)."""
        if self._synchronous == "FULL":
            return  # each commit synced it already
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDWR)
        except FileNotFoundError:
            return  # no WAL: everything is in the database file
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _settle_journal(self) -> None:
        """After a batch that did not commit: the writer commits and syncs a new journal
        epoch at once, before the callers hear of the failure, so the start's replay
        never brings that batch's records back (DESIGN.md §20.7). If that fails too, the
        next batch tries again first."""
        journal = self.journal
        if journal is None or not journal.durable_log:
            return
        try:
            if journal.before_batch(self._writer):
                self._sync_wal()
        except (sqlite3.Error, OSError, DavBackupError) as exc:
            self._recover_writer()
            log.warning("could not commit a new journal epoch after a failed batch: %s", exc)

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
        self._writer.execute(f"PRAGMA synchronous={self._synchronous}")
        if self.journal is not None:
            self.journal.install(self._writer)

    def close(self) -> None:
        with self._mutex:
            self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass
            self._readers.clear()
        self._writer.close()
