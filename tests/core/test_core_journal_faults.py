"""The server's journal records are durable before its catalog commits (DESIGN.md §20.2).

A journal append or sync that fails (no space, an I/O error) rolls the whole batch
back: the caller gets 507 or a 5xx error, the catalog is as it was (the previous
version of an overwritten file is still the current one), and a recovery from the
packs gives exactly the catalog the server had. Faults come from davbackup/faults.py
with ``"kind": "journal"``, so only the journal's packs fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from davbackup.errors import DavBackupError, RepositoryError, StorageFull
from davbackup.repository import Repository
from tests.core.test_core_recover import dump, lose_catalog, run_recover
from tests.core_fixtures import PASSPHRASE, USER, init_repo, read_file, write_file
from tests.fault_fixtures import arm

FAULTS = [
    ({"op": "append", "kind": "journal", "error": "ENOSPC"}, StorageFull),
    ({"op": "append", "kind": "journal", "error": "EIO"}, RepositoryError),
    ({"op": "sync", "kind": "journal", "error": "EIO"}, RepositoryError),
]


@pytest.mark.parametrize("rule, error", FAULTS, ids=[f"{r['op']}-{r['error']}" for r, _e in FAULTS])
def test_a_failed_journal_write_commits_nothing(tmp_path: Path, fault_control: Path, rule: dict,
                                                error: type[DavBackupError]) -> None:
    root = tmp_path / "repo"
    with init_repo(root) as repo:
        ns = repo.namespace(USER)
        ns.mkdir("/docs")
        write_file(ns, "/docs/a.txt", b"first")
        ns.set_prop("/docs/a.txt", "{urn:x}colour", "blue")
        before = dump(repo)
        seq = repo.catalog.reader().execute("SELECT value FROM meta WHERE key='journal_seq'").fetchone()
        arm(fault_control, rule)
        attempts = [
            lambda: write_file(ns, "/docs/a.txt", b"second"),  # a new version of an existing file
            lambda: write_file(ns, "/docs/new.txt", b"new"),
            lambda: ns.mkdir("/more"),
            lambda: ns.set_prop("/docs/a.txt", "{urn:x}colour", "red"),
            lambda: ns.move("/docs/a.txt", "/moved.txt", overwrite=False),
            lambda: ns.delete("/docs"),
            lambda: repo.users.set_quota(USER, 12345),
        ]
        for attempt in attempts:
            with pytest.raises(error, match="journal") as info:
                attempt()
            assert "injected fault" in str(info.value)
            assert dump(repo) == before, "a write whose journal record failed changed the catalog"
        assert read_file(ns, "/docs/a.txt") == b"first"
        assert ns.get_props("/docs/a.txt")["{urn:x}colour"] == "blue"
        assert repo.catalog.reader().execute("SELECT value FROM meta WHERE key='journal_seq'").fetchone() == seq
        arm(fault_control)
        write_file(ns, "/docs/a.txt", b"second")  # the same write works once the fault is gone
        ns.mkdir("/more")
        assert read_file(ns, "/docs/a.txt") == b"second"
        after = dump(repo)
    lose_catalog(root)
    report = run_recover(root)
    assert report.problems == [], report.problems
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert dump(repo) == after
        assert read_file(repo.namespace(USER), "/docs/a.txt") == b"second"


def test_failed_commits_in_a_row_are_all_superseded(tmp_path: Path, fault_control: Path) -> None:
    """Each COMMIT that fails after the records were synced leaves a record with the
    next sequence number; the writer commits a new epoch before its next records, so
    recovery follows the committed one however many failed before it (before this, the
    first batch after a start and the one after its failure could share an epoch)."""
    root = tmp_path / "repo"
    init_repo(root).close()
    with Repository.open(root, PASSPHRASE) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/first.txt", b"one")  # (this process's journal pack exists from here)
        arm(fault_control, {"op": "commit", "error": "EIO", "times": 3})
        for i in range(3):
            with pytest.raises(DavBackupError):
                write_file(ns, f"/never-{i}.txt", b"never committed")
        write_file(ns, "/real.txt", b"committed")
        epochs = repo.catalog.reader().execute("SELECT value FROM meta WHERE key='journal_epoch'").fetchone()
        before = dump(repo)
    arm(fault_control)
    lose_catalog(root)
    report = run_recover(root)
    assert report.problems == [] and report.superseded == 3, (report.problems, report.superseded, epochs)
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert dump(repo) == before
        ns = repo.namespace(USER)
        assert read_file(ns, "/real.txt") == b"committed"
        assert [e.name for e in ns.list("/") if e.name.startswith("never")] == []


def test_an_admin_command_beside_the_server_after_its_failed_commit(tmp_path: Path, fault_control: Path) -> None:
    """A record the server synced for a batch that did not commit, then a record with
    the same sequence number committed by another process (which writes after its
    COMMIT, with a new epoch of its own): recovery takes the committed one."""
    root = tmp_path / "repo"
    init_repo(root).close()
    with Repository.open(root, PASSPHRASE) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/first.txt", b"one")
        arm(fault_control, {"op": "commit", "error": "ENOSPC", "times": 1})
        with pytest.raises(StorageFull):
            write_file(ns, "/never.txt", b"never committed")
        arm(fault_control)
        with Repository.open(root, PASSPHRASE, mode="admin") as admin:
            admin.users.add("erin", "erin-password-1")
        write_file(ns, "/second.txt", b"two")
        before = dump(repo)
    lose_catalog(root)
    report = run_recover(root)
    assert report.problems == [] and report.superseded >= 1, (report.problems, report.superseded)
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert dump(repo) == before
        assert repo.users.verify("erin", "erin-password-1") is not None


def test_no_outbox_rows_for_the_server(tmp_path: Path) -> None:
    with init_repo(tmp_path / "repo") as repo:
        write_file(repo.namespace(USER), "/x", b"x")
        assert repo.catalog.reader().execute("SELECT count(*) FROM journal_outbox").fetchone() == (0,)
