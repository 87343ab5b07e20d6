"""pgsql.py and catalog_pg.py: SQLite's dialect on PostgreSQL, and the cluster rules.

The translation is pinned on text (no server needed); its meaning, the error mapping,
reconnection and the advisory-lock rules run on a real throwaway PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from davbackup.catalog_pg import PgCatalog, redact
from davbackup.errors import RepositoryError, StorageUnavailable
from davbackup.pgsql import translate
from tests.services import ThrowawayPostgres


def test_translation_of_the_dialect() -> None:
    t = translate("SELECT offset, length FROM version_chunks WHERE version_id=? AND offset>=? ORDER BY offset LIMIT ?")
    assert t.sql == ('SELECT "offset", length FROM version_chunks WHERE version_id=%s AND "offset">=%s'
                     ' ORDER BY "offset" LIMIT %s')
    t = translate("INSERT OR REPLACE INTO props(node_id, name, value_enc, born) VALUES (?, ?, ?, ?)",
                  lambda table: ("node_id", "name"))
    assert t.sql == ('INSERT INTO props(node_id, name, value_enc, born) VALUES (%s, %s, %s, %s)'
                     ' ON CONFLICT ("node_id", "name") DO UPDATE SET "value_enc" = EXCLUDED."value_enc",'
                     ' "born" = EXCLUDED."born"')
    assert translate("INSERT OR IGNORE INTO moments(owner, second) VALUES (?, ?)").sql == (
        "INSERT INTO moments(owner, second) VALUES (%s, %s) ON CONFLICT DO NOTHING")
    t = translate("INSERT INTO packs(name, state, created) VALUES (?, 'open', ?)")
    assert t.returns_id and t.sql is not None and t.sql.endswith(" RETURNING id")
    assert not translate("INSERT INTO nodes(id) VALUES (?)").returns_id
    assert translate("SELECT CAST(born AS INTEGER) FROM nodes").sql == "SELECT CAST(trunc(born) AS BIGINT) FROM nodes"
    assert translate("SELECT group_concat(rowid) FROM node_history").sql == (
        "SELECT string_agg(CAST(rowid AS TEXT), ',') FROM node_history")
    assert translate("DELETE FROM locks WHERE json_extract(data, '$.principal') = ?").sql == (
        "DELETE FROM locks WHERE (CAST(data AS jsonb) ->> 'principal') = %s")
    assert translate("SELECT max(sub.d + EXISTS(SELECT 1 FROM nodes c WHERE c.parent_id = sub.id)) FROM sub").sql == (
        "SELECT max(sub.d + CAST(EXISTS(SELECT 1 FROM nodes c WHERE c.parent_id = sub.id) AS INTEGER)) FROM sub")
    # quoted text is left alone, except that % is escaped for psycopg
    assert translate("SELECT 'a?b offset 5%' WHERE x=?").sql == "SELECT 'a?b offset 5%%' WHERE x=%s"
    assert translate("PRAGMA synchronous=FULL").sql is None
    assert translate("BEGIN IMMEDIATE").kind == "write-begin"
    assert translate("BEGIN").sql == "BEGIN ISOLATION LEVEL REPEATABLE READ"
    with pytest.raises(sqlite3.OperationalError):
        translate("INSERT OR REPLACE INTO unknown_table(a) VALUES (?)", lambda table: ())


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.fixture
def pg_url(postgres_server: ThrowawayPostgres) -> str:
    return postgres_server.url(postgres_server.create_database())


@pytest.fixture
def catalog(pg_url: str) -> Iterator[PgCatalog]:
    c = PgCatalog(pg_url, create=True, writer=True)
    yield c
    c.close()


def test_sqlite_semantics_on_postgres(catalog: PgCatalog) -> None:
    def txn(conn):  # type: ignore[no-untyped-def]
        vid = conn.execute("INSERT INTO versions(size, etag, created) VALUES (?, ?, ?)", (5, "e", 1.0)).lastrowid
        conn.execute("INSERT INTO versions(size, etag, created) VALUES (?, ?, ?)", (2**40, "f", 1.0))
        conn.execute("INSERT INTO nodes(id, parent_id, name_hash, name_enc, is_dir, version_id, created, modified,"
                     " born) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (1, None, b"h", b"n", True, vid, 1.0, 1.0, 7.9))
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('retention', ?)", ("a",))
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('retention', ?)", ("b",))
        return vid

    vid = catalog.write(txn)
    r = catalog.reader()
    assert vid == 1
    assert r.execute("SELECT sum(size) FROM versions").fetchone() == (5 + 2**40,)  # an int, not a Decimal
    assert r.execute("SELECT CAST(born AS INTEGER), is_dir FROM nodes").fetchone() == (7, 1)  # truncated, 0/1
    assert r.execute("SELECT value FROM meta WHERE key='retention'").fetchone() == ("b",)
    assert [row for row in r.execute("SELECT id FROM versions ORDER BY id")] == [(1,), (2,)]
    with pytest.raises(RepositoryError):  # a constraint violation fails the job, as on SQLite
        catalog.write(lambda conn: conn.execute("INSERT INTO versions(id, size, etag, created) VALUES (1, 1, 'x', 1)"))
    with pytest.raises(sqlite3.IntegrityError):
        r.execute("INSERT INTO meta(key, value) VALUES ('retention', 'c')")


def test_write_transactions_are_serialised_across_catalogs(catalog: PgCatalog, pg_url: str) -> None:
    """Two processes' catalogs (two sessions): a write transaction of one waits for the
    other's, so "max + 1" node IDs stay unique (the advisory transaction lock)."""
    other = PgCatalog(pg_url, writer=True)
    try:
        inside, release = threading.Event(), threading.Event()
        order: list[str] = []

        def slow(conn):  # type: ignore[no-untyped-def]
            conn.execute("SELECT 1")  # the lock comes with the transaction's first statement
            inside.set()
            assert release.wait(10)
            order.append("first")

        t = threading.Thread(target=catalog.write, args=(slow,))
        t.start()
        assert inside.wait(10)
        done = threading.Event()

        def second() -> None:
            other.write(lambda conn: (conn.execute("SELECT 1"), order.append("second")))
            done.set()

        threading.Thread(target=second).start()
        assert not done.wait(0.5), "a write transaction ran beside another one"
        release.set()
        assert done.wait(10)
        t.join()
        assert order == ["first", "second"]
    finally:
        other.close()


def test_a_node_seals_only_dead_nodes_open_packs(catalog: PgCatalog, pg_url: str) -> None:
    catalog.write(lambda conn: conn.execute("INSERT INTO packs(name, state, created) VALUES ('p1', 'open', 1)"))
    starting = PgCatalog(pg_url, writer=True)  # what ChunkStore does at start
    try:
        assert starting.node != catalog.node
        starting.write(lambda conn: conn.execute("UPDATE packs SET state='sealed' WHERE state='open'"))
        assert starting.reader().execute("SELECT state FROM packs").fetchone() == ("open",)
        catalog.close()  # the owner is gone (as after SIGKILL: its session ends)
        deadline = time.monotonic() + 10  # the server ends the session once it sees the socket close
        while starting.reader().execute("SELECT state FROM packs").fetchone() != ("sealed",):
            assert time.monotonic() < deadline, "a dead node's open pack was not sealed"
            starting.write(lambda conn: conn.execute("UPDATE packs SET state='sealed' WHERE state='open'"))
            time.sleep(0.1)
    finally:
        starting.close()


def test_named_locks_are_cluster_wide(catalog: PgCatalog, pg_url: str) -> None:
    other = PgCatalog(pg_url)
    try:
        assert catalog.try_lock("gc")
        assert not catalog.try_lock("gc")  # not reentrant inside one process either
        assert not other.try_lock("gc")
        catalog.unlock("gc")
        assert other.try_lock("gc")
        assert not catalog.writers_active() and other.writers_active()
    finally:
        other.close()


def _terminate_others(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = current_database() AND pid <> pg_backend_pid()")


def test_lost_sessions_fail_cleanly_and_reconnect(catalog: PgCatalog, pg_url: str) -> None:
    """The server ends every session (a restart, a failover): the next write fails
    with 503 (StorageUnavailable) or succeeds on a new session, readers reconnect, and
    nothing is reported as committed that is not there."""
    catalog.write(lambda conn: conn.execute("INSERT INTO meta(key, value) VALUES ('a', '1')"))
    reader = catalog.reader()
    _terminate_others(pg_url)
    time.sleep(0.2)
    assert reader.execute("SELECT value FROM meta WHERE key='a'").fetchone() == ("1",)
    outcomes = []
    for value in ("2", "3"):
        try:
            catalog.write(lambda conn, v=value: conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", ("k" + v, v)))
            outcomes.append(value)
        except StorageUnavailable:
            pass
    assert "3" in outcomes  # at the latest the second write has a new session
    stored = {r[0] for r in catalog.reader().execute("SELECT value FROM meta WHERE key LIKE 'k%'")}
    assert stored == set(outcomes)


def test_a_serving_catalog_takes_its_locks_again_after_losing_its_session(catalog: PgCatalog, pg_url: str) -> None:
    observer = PgCatalog(pg_url)
    try:
        assert observer.writers_active()
        _terminate_others(pg_url)  # also ends the observer's own sessions: it reconnects
        deadline = time.monotonic() + 15
        while not observer.writers_active():
            assert time.monotonic() < deadline, "the serving catalog did not take its writer lock again"
            time.sleep(0.5)
    finally:
        observer.close()
