"""The metadata journal on a PostgreSQL catalog, and `recover` into PostgreSQL
(DESIGN.md §20.8), on the throwaway PostgreSQL of tests/services.py (packs in the
repository directory; the cluster tests run the same over Ceph RGW).

Every durable change of every process becomes records before its COMMIT; a failed
journal write commits nothing; a COMMIT that fails after its records were synced is
superseded by the next transaction's greater epoch; the records and checkpoints
rebuild the catalog row for row in a new database, or in the old one with --force
(the old catalog kept in a schema of its own); gc compacts the journal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from davbackup.errors import DavBackupError, RepositoryError, StorageFull, UsageError
from davbackup.journal import TYPE_JOURNAL, open_blob, parse_record_id
from davbackup.maintenance.gc import collect_garbage
from davbackup.maintenance.recover import RecoverReport
from davbackup.maintenance.recover_pg import ASIDE_PREFIX, recover_catalog
from davbackup.pack import scan_pack
from davbackup.repository import Repository
from tests.core.test_core_recover import busy_workload, dump
from tests.core_fixtures import PASSPHRASE, USER, init_repo, read_file, write_file
from tests.fault_fixtures import arm
from tests.services import ThrowawayPostgres


@pytest.fixture
def pg_url(postgres_server: ThrowawayPostgres) -> str:
    return str(postgres_server.url(postgres_server.create_database()))


def workload(repo: Repository) -> None:
    busy_workload(repo)
    write_file(repo.namespace("bob"), "/b.txt", b"bob's")


def recover_into(root: Path, url: str, *, force: bool = False) -> tuple[RecoverReport, str | None]:
    location, config, master = Repository.unlock(root, PASSPHRASE)
    return recover_catalog(url, location, config, master, force=force, progress=lambda _t: None)


def assert_recovers(root: Path, postgres: ThrowawayPostgres, expected: dict) -> RecoverReport:
    """Recover into a new database: its catalog must hold ``expected`` (a :func:`dump`)."""
    url = postgres.url(postgres.create_database())
    report, aside = recover_into(root, url)
    assert report.problems == [] and aside is None, report.problems
    with Repository.open(root, PASSPHRASE, mode="read", catalog_url=url) as repo:
        assert dump(repo) == expected
    return report


def journal_records(repo: Repository) -> list[dict]:
    """Every record in the journal packs the catalog lists, verified and decoded."""
    key = repo.keys.journal_key()
    out = []
    for (name,) in repo.catalog.reader().execute("SELECT name FROM journal_packs WHERE kind='journal'").fetchall():
        with repo.storage.open_stream(name) as stream:
            for blob in scan_pack(stream, bodies=True):
                if blob.header.blob_type != TYPE_JOURNAL:
                    continue
                raw = bytes(blob.header.raw) + bytes(blob.body or b"")
                _h, payload = open_blob(key, raw, TYPE_JOURNAL)
                seq, _tag = parse_record_id(blob.header.chunk_id)
                doc = json.loads(payload)
                assert doc["seq"] == seq
                out.append(doc)
    return sorted(out, key=lambda d: d["seq"])


def test_every_change_has_records_and_recover_rebuilds_the_catalog(tmp_path: Path, pg_url: str,
                                                                  postgres_server: ThrowawayPostgres) -> None:
    root = tmp_path / "repo"
    with init_repo(root, catalog_url=pg_url) as repo:
        assert repo.catalog.reader().execute("SELECT value FROM meta WHERE key='journal_checkpoint'").fetchone()
        workload(repo)
        records = journal_records(repo)
        seqs = [d["seq"] for d in records]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 10
        epochs = [d["epoch"] for d in records]
        assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs)  # one transaction each, in order
        tables = {op[0] for d in records for op in d["ops"]}
        assert {"users", "nodes", "versions", "props", "moments", "segments"} <= tables
        last = repo.catalog.reader().execute("SELECT value FROM meta WHERE key='journal_seq'").fetchone()
        assert last == (str(seqs[-1]),)
        before = dump(repo)
    new_url = postgres_server.url(postgres_server.create_database())
    report, aside = recover_into(root, new_url)
    assert report.problems == [] and aside is None, report.problems
    assert report.users == 2 and report.records_applied >= 1
    with Repository.open(root, PASSPHRASE, mode="read", catalog_url=new_url) as repo:
        assert dump(repo) == before
        ns = repo.namespace(USER)
        assert read_file(ns, "/moved.txt") == b"two"
        assert ns.get_props("/docs/a.txt")["{urn:x}colour"] == "blue"
        assert read_file(repo.namespace("bob"), "/b.txt") == b"bob's"
    with Repository.open(root, PASSPHRASE, catalog_url=new_url) as repo:  # the journal goes on from there
        write_file(repo.namespace(USER), "/after.txt", b"after")
        after = dump(repo)
    assert_recovers(root, postgres_server, after)


def test_recover_replaces_a_catalog_only_with_force(tmp_path: Path, pg_url: str) -> None:
    root = tmp_path / "repo"
    with init_repo(root, catalog_url=pg_url) as repo:
        workload(repo)
        before = dump(repo)
    with pytest.raises(UsageError, match="--force"):
        recover_into(root, pg_url)
    report, aside = recover_into(root, pg_url, force=True)
    assert report.problems == [] and aside is not None and aside.startswith(ASIDE_PREFIX)
    with Repository.open(root, PASSPHRASE, mode="read", catalog_url=pg_url) as repo:
        assert dump(repo) == before
    with psycopg.connect(pg_url) as conn:  # the old catalog, kept whole
        rows = conn.execute(f'SELECT count(*) FROM "{aside}".nodes').fetchone()
        assert rows is not None and rows[0] == len(before["nodes"])


def test_a_node_serving_blocks_a_forced_recover(tmp_path: Path, pg_url: str) -> None:
    root = tmp_path / "repo"
    with init_repo(root, catalog_url=pg_url):  # mode rw: a serving process
        from davbackup.errors import Locked

        with pytest.raises(Locked):
            recover_into(root, pg_url, force=True)


FAULTS = [
    ({"op": "append", "kind": "journal", "error": "ENOSPC"}, StorageFull),
    ({"op": "sync", "kind": "journal", "error": "EIO"}, RepositoryError),
]


@pytest.mark.parametrize("rule, error", FAULTS, ids=[f"{r['op']}-{r['error']}" for r, _e in FAULTS])
def test_a_failed_journal_write_commits_nothing(tmp_path: Path, pg_url: str, fault_control: Path, rule: dict,
                                                error: type[DavBackupError],
                                                postgres_server: ThrowawayPostgres) -> None:
    root = tmp_path / "repo"
    with init_repo(root, catalog_url=pg_url) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/a.txt", b"first")
        before = dump(repo)
        arm(fault_control, rule)
        for attempt in (lambda: write_file(ns, "/a.txt", b"second"), lambda: ns.mkdir("/more"),
                        lambda: ns.set_prop("/a.txt", "{urn:x}c", "red"), lambda: repo.users.set_quota(USER, 5)):
            with pytest.raises(error, match="journal"):
                attempt()
            assert dump(repo) == before
        arm(fault_control)
        write_file(ns, "/a.txt", b"second")
        after = dump(repo)
    assert_recovers(root, postgres_server, after)


def test_failed_commits_are_superseded(tmp_path: Path, pg_url: str, fault_control: Path,
                                       postgres_server: ThrowawayPostgres) -> None:
    """A COMMIT that fails after the records were synced leaves records with the next
    sequence number in the pack; the next transaction's epoch is greater."""
    root = tmp_path / "repo"
    with init_repo(root, catalog_url=pg_url) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/first.txt", b"one")
        arm(fault_control, {"op": "commit", "error": "EIO", "times": 2})
        for i in range(2):
            with pytest.raises(DavBackupError):
                write_file(ns, f"/never-{i}.txt", b"never committed")
        arm(fault_control)
        write_file(ns, "/real.txt", b"committed")
        before = dump(repo)
    new_url = postgres_server.url(postgres_server.create_database())
    report, _aside = recover_into(root, new_url)
    assert report.problems == [] and report.superseded == 2, (report.problems, report.superseded)
    with Repository.open(root, PASSPHRASE, mode="read", catalog_url=new_url) as repo:
        assert dump(repo) == before
        assert [e.name for e in repo.namespace(USER).list("/") if e.name.startswith("never")] == []


def test_gc_checkpoints_and_compacts_the_journal(tmp_path: Path, pg_url: str,
                                                 postgres_server: ThrowawayPostgres) -> None:
    root = tmp_path / "repo"
    with init_repo(root, catalog_url=pg_url) as repo:
        workload(repo)
    with Repository.open(root, PASSPHRASE, mode="admin", catalog_url=pg_url) as admin:
        first = admin.catalog.reader().execute("SELECT count(*) FROM journal_packs").fetchone()
        report = collect_garbage(admin)
        assert report.journal_packs_deleted >= 2, (first, report)
        kinds = admin.catalog.reader().execute("SELECT kind FROM journal_packs").fetchall()
        assert kinds == [("checkpoint",)]
    with Repository.open(root, PASSPHRASE, catalog_url=pg_url) as repo:
        write_file(repo.namespace(USER), "/after-gc.txt", b"x")
        before = dump(repo)
    new_url = postgres_server.url(postgres_server.create_database())
    report2, _aside = recover_into(root, new_url)
    assert report2.problems == [] and report2.checkpoint_seq is not None, report2.problems
    with Repository.open(root, PASSPHRASE, mode="read", catalog_url=new_url) as repo:
        assert dump(repo) == before
        assert read_file(repo.namespace(USER), "/after-gc.txt") == b"x"


def test_a_catalog_from_before_the_journal_gets_one(tmp_path: Path, pg_url: str,
                                                   postgres_server: ThrowawayPostgres) -> None:
    """A PostgreSQL catalog created before the journal (its objects removed here) gets
    them on its next open and a first checkpoint on its first writable open; from then
    on it is recoverable."""
    root = tmp_path / "repo"
    with init_repo(root, catalog_url=pg_url) as repo:
        workload(repo)
        for (name,) in repo.catalog.reader().execute("SELECT name FROM journal_packs").fetchall():
            repo.storage.delete(name)  # such a catalog has no journal in its store either
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION davbackup_journal_capture() CASCADE")
        conn.execute("DROP TABLE journal_packs")
        conn.execute("DROP SEQUENCE journal_epochs")
        conn.execute("DELETE FROM meta WHERE key LIKE 'journal%%'")
    with Repository.open(root, PASSPHRASE, catalog_url=pg_url) as repo:
        assert repo.catalog.reader().execute("SELECT value FROM meta WHERE key='journal_checkpoint'").fetchone()
        write_file(repo.namespace(USER), "/later.txt", b"later")
        before = dump(repo)
    report = assert_recovers(root, postgres_server, before)
    assert report.checkpoint_seq == 0 and report.records_applied >= 1


def test_capture_survives_a_lost_session(tmp_path: Path, pg_url: str, postgres_server: ThrowawayPostgres) -> None:
    """The writer session is replaced after PostgreSQL ended it: the new session
    captures too (it is set up before it runs any statement), so nothing committed
    through it is missing from the journal."""
    root = tmp_path / "repo"
    with init_repo(root, catalog_url=pg_url) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/before.txt", b"before")
        dbname = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                  " WHERE datname = %s", (dbname,)).fetchone()
        assert ended is not None and ended[0] >= 2
        for attempt in range(5):  # the first statement on a dead session may fail (503)
            try:
                write_file(ns, "/after.txt", b"after")
                break
            except DavBackupError:
                assert attempt < 4
        ns.mkdir("/more")
        before = dump(repo)
    assert_recovers(root, postgres_server, before)
