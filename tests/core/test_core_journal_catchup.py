"""The journal is the server's durable log: a power cut that takes the catalog's
unsynced WAL tail loses no acknowledged write (DESIGN.md §20.7).

The server's catalog commits with ``synchronous=NORMAL``; its journal records are
synced before COMMIT. A power cut is simulated by putting back a copy of the catalog
files taken at the last point the catalog was synced (what the disk would hold), after
the server went on writing with the WAL unsynced; the test checks that nothing after
that point synced the WAL (else the copy would not be what a power cut leaves). The
next start must bring every acknowledged change back from the journal, byte for
byte, and none of a batch whose COMMIT failed.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from davbackup.catalog import read_meta
from davbackup.errors import DavBackupError
from davbackup.journal import PREALLOCATE, TYPE_JOURNAL
from davbackup.pack import scan_pack
from davbackup.repository import Repository
from tests.core.test_core_recover import dump, lose_catalog, run_recover
from tests.core_fixtures import PASSPHRASE, USER, init_repo, read_file, write_file
from tests.fault_fixtures import arm
from tests.power_cut import power_cut, synced_copy

class SyncSpy:
    """Counts the catalog's WAL syncs (the real sync still runs)."""

    def __init__(self, repo: Repository) -> None:
        self.count = 0
        real = repo.catalog._sync_wal

        def counted() -> None:
            self.count += 1
            real()

        repo.catalog._sync_wal = counted  # type: ignore[method-assign]


def test_the_server_commits_without_syncing_the_wal(tmp_path: Path) -> None:
    with init_repo(tmp_path / "repo") as repo:
        conn = repo.catalog._writer
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert conn.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY: no temporary files
        spy = SyncSpy(repo)
        ns = repo.namespace(USER)
        write_file(ns, "/a.txt", b"a")  # (the first write registers the journal pack: a sync)
        before = spy.count
        for i in range(5):
            write_file(ns, f"/f{i}.txt", os.urandom(4096))
        ns.set_prop("/a.txt", "{urn:x}k", "v")
        assert spy.count == before, "a small PUT synced the catalog's WAL"
    with Repository.open(tmp_path / "repo", PASSPHRASE, mode="admin") as admin:
        assert admin.catalog._writer.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_a_power_cut_loses_no_acknowledged_write(tmp_path: Path, fault_control: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "repo"
    init_repo(root).close()
    kept = os.urandom(100_000)
    with Repository.open(root, PASSPHRASE) as repo:
        ns = repo.namespace(USER)
        ns.mkdir("/docs")
        write_file(ns, "/docs/a.txt", b"first")
        write_file(ns, "/docs/kept.bin", kept)
        write_file(ns, "/docs/gone.txt", b"to be deleted")
        # A batch whose COMMIT fails after its records were synced: the caller gets an
        # error, and the writer syncs a new epoch before answering it.
        arm(fault_control, {"op": "commit", "error": "EIO", "times": 1})
        with pytest.raises(DavBackupError):
            write_file(ns, "/docs/failed.txt", b"never acknowledged")
        arm(fault_control)
        copy = synced_copy(repo.root)
        spy = SyncSpy(repo)
        expected = {"/docs/a.txt": os.urandom(5000), "/docs/kept.bin": kept}
        write_file(ns, "/docs/a.txt", expected["/docs/a.txt"])  # a new version of an existing file
        for i in range(8):
            expected[f"/docs/n{i}.bin"] = os.urandom(3000 + i)
            write_file(ns, f"/docs/n{i}.bin", expected[f"/docs/n{i}.bin"])
        expected["/docs/dup.bin"] = kept
        write_file(ns, "/docs/dup.bin", kept)  # deduplicated against an older chunk
        ns.mkdir("/later")
        ns.move("/docs/n0.bin", "/later/n0.bin", overwrite=False)
        expected["/later/n0.bin"] = expected.pop("/docs/n0.bin")
        ns.delete("/docs/gone.txt")
        ns.set_prop("/docs/a.txt", "{urn:x}colour", "blue")
        repo.users.set_quota(USER, 10**9)
        assert spy.count == 0, "the catalog was synced after the copy: it is not what a power cut leaves"
        after = dump(repo)
    power_cut(root, copy)
    caplog.set_level("WARNING", logger="davbackup.journal_catchup")
    with Repository.open(root, PASSPHRASE) as repo:
        assert "the catalog lacked journal records" in caplog.text
        assert dump(repo) == after
        ns = repo.namespace(USER)
        for path, data in expected.items():
            assert read_file(ns, path) == data, path
        names = {e.name for e in ns.list("/docs")}
        assert "failed.txt" not in names and "gone.txt" not in names
        assert ns.get_props("/docs/a.txt")["{urn:x}colour"] == "blue"
        # the replayed catalog goes on as usual, and a recovery from the packs agrees
        write_file(ns, "/docs/after.txt", b"after the cut")
        final = dump(repo)
    lose_catalog(root)
    report = run_recover(root)
    assert report.problems == [], report.problems
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert dump(repo) == final


def test_a_start_after_a_clean_close_replays_nothing(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    with init_repo(root) as repo:
        write_file(repo.namespace(USER), "/a.txt", b"a")
        before = dump(repo)
    with Repository.open(root, PASSPHRASE) as repo:
        assert dump(repo) == before


def test_without_a_restart_a_batch_cut_off_before_its_commit_stays_out(tmp_path: Path) -> None:
    """A process killed between its journal sync and its COMMIT (simulated: the catalog
    as it was before that batch, the record in the pack): without a restart of the
    machine the WAL lost nothing, so the record is of a batch that never committed,
    and every reader saw it as not done; the next start must not apply it."""
    root = tmp_path / "repo"
    init_repo(root).close()
    with Repository.open(root, PASSPHRASE) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/a.txt", b"a")
        copy = synced_copy(repo.root)
        before = dump(repo)
        write_file(ns, "/cut-off.txt", b"in flight when the process died")
    lose_catalog(root)
    for name, data in copy.items():
        (root / name).write_bytes(data)
    with Repository.open(root, PASSPHRASE) as repo:
        assert dump(repo) == before
        assert [e.name for e in repo.namespace(USER).list("/")] == ["a.txt"]


def test_a_failed_batch_is_not_brought_back(tmp_path: Path, fault_control: Path) -> None:
    """The records of a batch whose COMMIT failed stay in the journal pack; the epoch the
    writer synced before answering its caller keeps the start from applying them, even
    when nothing was written after it."""
    root = tmp_path / "repo"
    init_repo(root).close()
    with Repository.open(root, PASSPHRASE) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/a.txt", b"a")
        arm(fault_control, {"op": "commit", "error": "EIO", "times": 2})
        for name in ("/failed.txt", "/a.txt"):
            with pytest.raises(DavBackupError):
                write_file(ns, name, b"never acknowledged")
        arm(fault_control)
        copy = synced_copy(repo.root)
        before = dump(repo)
    power_cut(root, copy)
    with Repository.open(root, PASSPHRASE) as repo:
        assert dump(repo) == before
        ns = repo.namespace(USER)
        assert read_file(ns, "/a.txt") == b"a"
        assert [e.name for e in ns.list("/")] == ["a.txt"]


def test_the_servers_journal_pack_has_zeros_written_ahead(tmp_path: Path) -> None:
    """The server's journal pack keeps zeros written past its records (so a synced
    append changes neither its size nor its block map); a reader stops at them, and
    closing the pack cuts them off."""
    root = tmp_path / "repo"
    with init_repo(root) as repo:
        write_file(repo.namespace(USER), "/a.txt", b"a")
        name = read_meta(repo.catalog.reader(), "journal_writer_pack")
        assert name is not None
        path = repo.storage.path(name)  # type: ignore[attr-defined]
        with repo.storage.open_stream(name) as stream:
            blobs = list(scan_pack(stream))
        end = blobs[-1].offset + blobs[-1].total_len
        assert {b.header.blob_type for b in blobs} == {TYPE_JOURNAL}
        assert path.stat().st_size == PREALLOCATE > end
        assert path.read_bytes()[end:] == bytes(PREALLOCATE - end)
        write_file(repo.namespace(USER), "/b.txt", b"b")  # appended inside the zeros
        with repo.storage.open_stream(name) as stream:
            assert len(list(scan_pack(stream))) == len(blobs) + 1
        assert path.stat().st_size == PREALLOCATE
    with repo.storage.open_stream(name) as stream:
        blobs = list(scan_pack(stream))
    assert path.stat().st_size == blobs[-1].offset + blobs[-1].total_len


def test_an_admin_command_first_after_the_cut_catches_up_too(tmp_path: Path) -> None:
    """After the power cut an admin command opens the catalog before any server: it
    must bring the lost commits back before it writes a record of its own (its record
    would take their sequence numbers and cut the hash chain they continue)."""
    root = tmp_path / "repo"
    init_repo(root).close()
    with Repository.open(root, PASSPHRASE) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/a.txt", b"a")
        copy = synced_copy(repo.root)
        write_file(ns, "/b.txt", b"acknowledged after the last sync")
    power_cut(root, copy)
    with Repository.open(root, PASSPHRASE, mode="admin") as admin:
        admin.users.add("erin", "erin-password-1")
    with Repository.open(root, PASSPHRASE) as repo:
        assert read_file(repo.namespace(USER), "/b.txt") == b"acknowledged after the last sync"
        assert repo.users.verify("erin", "erin-password-1") is not None
