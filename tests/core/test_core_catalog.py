"""catalog.py: group commit, per-job savepoints, snapshots, schema."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from davbackup.catalog import SCHEMA_VERSION, Catalog
from davbackup.errors import DavBackupError, RepositoryError
from tests.tmpfs import fill, mounted_tmpfs


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path):
    """The catalog on each backend: the group commit is shared, the connections differ."""
    if request.param == "sqlite":
        c = Catalog(tmp_path / "catalog.sqlite", create=True)
    else:
        from davbackup.catalog_pg import PgCatalog

        server = request.getfixturevalue("postgres_server")
        c = PgCatalog(server.url(server.create_database()), create=True, writer=True)
    c.write(lambda conn: conn.execute("CREATE TABLE t(x INTEGER PRIMARY KEY)"))
    yield c
    c.close()


def rows(c: Catalog) -> list[int]:
    return [r[0] for r in c.reader().execute("SELECT x FROM t ORDER BY x")]


def test_schema_and_wal(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite", create=True)
    conn = catalog.reader()
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "nodes", "versions", "segments", "version_segments", "packs", "chunks", "props", "locks"} <= tables
    views = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    assert views == {"version_chunks"}
    catalog.close()


def test_not_a_catalog(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError):
        Catalog(tmp_path / "missing.sqlite")
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE x(y)").connection.close()
    with pytest.raises(RepositoryError):
        Catalog(tmp_path / "other.sqlite")


def test_write_returns_result_and_raises_job_error(catalog: Catalog) -> None:
    assert catalog.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)").rowcount) == 1

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (2)")
        raise KeyError("nope")

    with pytest.raises(KeyError):
        catalog.write(failing)
    assert rows(catalog) == [1]
    with pytest.raises(RepositoryError):  # SQL errors are wrapped
        catalog.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
    assert rows(catalog) == [1]


def test_group_commit_isolates_failing_jobs(catalog: Catalog) -> None:
    """Many concurrent jobs, every third one failing: exactly the good ones commit."""
    results: dict[int, object] = {}

    def job(i: int):  # type: ignore[no-untyped-def]
        def fn(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (i,))
            if i % 3 == 0:
                raise ValueError(i)
            return i * 10

        try:
            results[i] = catalog.write(fn)
        except ValueError as exc:
            results[i] = exc

    threads = [threading.Thread(target=job, args=(i,)) for i in range(1, 61)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rows(catalog) == [i for i in range(1, 61) if i % 3]
    for i, r in results.items():
        assert (isinstance(r, ValueError) if i % 3 == 0 else r == i * 10), (i, r)


def test_snapshot_sees_one_state(catalog: Catalog) -> None:
    catalog.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
    with catalog.snapshot() as conn:
        first = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        done = threading.Event()

        def other() -> None:
            catalog.write(lambda c: c.execute("INSERT INTO t VALUES (2)"))
            done.set()

        threading.Thread(target=other).start()
        assert done.wait(10)
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == first
    assert rows(catalog) == [1, 2]


def test_closed_catalog_refuses_writes(tmp_path: Path) -> None:
    c = Catalog(tmp_path / "c.sqlite", create=True)
    c.close()
    with pytest.raises(RepositoryError):
        c.write(lambda conn: None)


def test_a_broken_batch_strands_no_caller(catalog: Catalog) -> None:
    """When a batch dies mid-way (SQLite rolls the whole transaction back on SQLITE_FULL or
    SQLITE_IOERR, so ``ROLLBACK TO job`` fails), every caller in that batch must get an
    error: none may be told its job committed when it never ran.

    Simulated by a job that ends the transaction itself, in one batch with a good job.
    """
    gate, entered = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def blocker(conn: sqlite3.Connection) -> str:
        entered.set()
        assert gate.wait(10)
        return "a"

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # what SQLite does by itself on a full disk
        raise OSError("disk full")

    def good(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t VALUES (42)")
        return "c"

    def call(key: str, fn) -> None:  # type: ignore[no-untyped-def]
        try:
            outcome[key] = ("ok", catalog.write(fn))
        except BaseException as exc:  # noqa: BLE001
            outcome[key] = ("error", exc)

    ta = threading.Thread(target=call, args=("a", blocker))
    ta.start()
    assert entered.wait(10)
    tb = threading.Thread(target=call, args=("b", bad))
    tb.start()
    deadline = time.monotonic() + 10
    while len(catalog._queue) < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    tc = threading.Thread(target=call, args=("c", good))
    tc.start()
    while len(catalog._queue) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(catalog._queue) == 2, "could not line up both jobs in one batch"
    gate.set()
    for t in (ta, tb, tc):
        t.join(10)
        assert not t.is_alive(), "a caller hangs"
    # a ran alone in the first batch and committed; b and c made the second batch, whose
    # transaction b ended: b keeps its own error, c never ran and is told so
    assert outcome["a"] == ("ok", "a")
    assert outcome["b"][0] == "error" and isinstance(outcome["b"][1], OSError), outcome["b"]
    assert outcome["c"][0] == "error" and isinstance(outcome["c"][1], DavBackupError), outcome["c"]
    assert "nothing was written" in outcome["c"][1].message
    assert 42 not in rows(catalog)
    # and the catalog is usable afterwards
    catalog.write(lambda conn: conn.execute("INSERT INTO t VALUES (43)"))
    assert 43 in rows(catalog)


# -- a COMMIT that fails for real: the catalog on a tiny, full filesystem ----------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs."""
    with mounted_tmpfs(tmp_path / "tiny", "4m") as mnt:
        yield mnt


def test_failed_commit_fails_every_job_of_the_batch(tiny_fs: Path) -> None:
    """SQLITE_FULL at COMMIT: no caller is told its write committed, every caller
    gets StorageFull (507), and once space is back writes work on the same object."""
    from davbackup.errors import StorageFull

    c = Catalog(tiny_fs / "catalog.sqlite", create=True)
    try:
        c.write(lambda conn: conn.execute("CREATE TABLE blobs(k INTEGER PRIMARY KEY, v BLOB)"))
        fill(tiny_fs / "filler")
        outcomes: dict[int, object] = {}
        barrier = threading.Barrier(8)

        def writer(i: int) -> None:
            barrier.wait()
            try:
                c.write(lambda conn: conn.execute("INSERT INTO blobs VALUES (?, ?)", (i, b"x" * 200_000)))
                outcomes[i] = "ok"
            except StorageFull as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = {r[0] for r in c.reader().execute("SELECT k FROM blobs")}
        acknowledged = {i for i, o in outcomes.items() if o == "ok"}
        assert len(outcomes) == 8
        assert acknowledged == stored  # nothing acknowledged that is not there
        assert len(stored) < 8  # the disk really was full for most of them
        assert all(isinstance(o, StorageFull) for i, o in outcomes.items() if i not in acknowledged)
        # a further write on the full disk is refused the same way, not with "cannot rollback"
        with pytest.raises(StorageFull):
            c.write(lambda conn: conn.execute("INSERT INTO blobs VALUES (100, ?)", (b"y" * 300_000,)))
        (tiny_fs / "filler").unlink()
        c.write(lambda conn: conn.execute("INSERT INTO blobs VALUES (101, ?)", (b"z" * 1000,)))
        assert 101 in {r[0] for r in c.reader().execute("SELECT k FROM blobs")}
    finally:
        c.close()
    reopened = Catalog(tiny_fs / "catalog.sqlite")
    try:
        assert {r[0] for r in reopened.reader().execute("SELECT k FROM blobs")} == acknowledged | {101}
    finally:
        reopened.close()


def test_the_next_batch_is_led_by_a_waiting_caller(catalog: Catalog) -> None:
    """A caller that queued while a batch ran leads the next batch (nobody else would
    start it): even when the batch before failed as a whole, every queued caller gets
    its own outcome and nobody hangs."""
    gate, entered = threading.Event(), threading.Event()
    outcome: dict[int, object] = {}

    def first(conn: sqlite3.Connection) -> None:
        entered.set()
        assert gate.wait(10)
        conn.execute("ROLLBACK")  # the whole batch dies (as on a full disk)
        raise OSError("disk full")

    def insert(i: int):  # type: ignore[no-untyped-def]
        def fn(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (i,))
            return i

        return fn

    def call(key: int, fn) -> None:  # type: ignore[no-untyped-def]
        try:
            outcome[key] = catalog.write(fn)
        except BaseException as exc:  # noqa: BLE001
            outcome[key] = exc

    threads = [threading.Thread(target=call, args=(0, first))]
    threads[0].start()
    assert entered.wait(10)
    threads += [threading.Thread(target=call, args=(i, insert(i))) for i in range(1, 9)]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while len(catalog._queue) < 8 and time.monotonic() < deadline:
        time.sleep(0.001)
    gate.set()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a caller hangs"
    assert isinstance(outcome[0], OSError)
    assert {i: outcome[i] for i in range(1, 9)} == {i: i for i in range(1, 9)}
    assert rows(catalog) == list(range(1, 9))
    assert catalog._leader is False and catalog._queue == []
