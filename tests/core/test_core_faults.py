"""Fault injection in the core (davbackup/faults.py): the rule file, and what the chunk
store does when a pack sync fails (the Linux meaning of a failed fsync: what it
should have made durable may be gone, even if a later fsync succeeds)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from davbackup.errors import DavBackupError, StorageFull
from davbackup.faults import ENV, FaultPlan
from davbackup.maintenance.check import check_repository
from tests.core_fixtures import USER, init_repo, read_file
from tests.fault_fixtures import arm

MiB = 1024 * 1024


def test_plan_rules_times_delays_and_reload(tmp_path: Path):
    fault_control = tmp_path / "f.json"
    plan = FaultPlan(fault_control)
    assert plan.check("append") is None  # no file: no faults
    arm(fault_control, {"op": "append", "error": "ENOSPC", "times": 2}, {"op": "*", "delay": 0.02})
    started = time.monotonic()
    assert [plan.check("append") for _ in range(3)] == ["ENOSPC", "ENOSPC", None]
    assert plan.check("commit") is None
    assert time.monotonic() - started >= 0.08  # the delay applies to every operation
    arm(fault_control, {"op": "read", "error": "EIO"})
    assert plan.check("read") == "EIO" and plan.check("append") is None
    with pytest.raises(OSError) as info:
        plan.raise_os_error("read", "pack x")
    assert "injected fault" in str(info.value)
    arm(fault_control, {"op": "bogus", "error": "EIO"}, {"op": "sync", "error": "EPERM"})
    assert plan.check("sync") is None  # malformed rules are ignored (and logged)
    arm(fault_control)
    assert plan.check("read") is None


def test_not_active_without_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV, raising=False)
    repo = init_repo(tmp_path / "repo")
    try:
        assert type(repo.storage).__name__ == "LocalPackStorage"
        assert repo.catalog.fault_hook is None
    finally:
        repo.close()


def test_failed_fsync_fails_every_writer_with_chunks_behind_it(tmp_path: Path, fault_control: Path):
    """Writer B's chunks sit unsynced in the pack when writer A's sync fails. The
    wrapper then zeroes the unsynced bytes on disk, as a lost page cache would. B's
    commit must fail too even though the fault is gone (a later fsync would
    "succeed"), and a new attempt stores the chunks afresh."""
    repo = init_repo(tmp_path / "repo")
    try:
        ns = repo.namespace(USER)
        data_b, data_a = os.urandom(12 * MiB), os.urandom(2 * MiB)
        b = ns.open_write("/b.bin")
        b.write(data_b)
        b.writer.settle()  # B's complete chunks are appended (pending, not synced)
        a = ns.open_write("/a.bin")
        a.write(data_a)
        arm(fault_control, {"op": "sync", "error": "EIO"})
        with pytest.raises(DavBackupError) as info:
            a.commit(expected_size=len(data_a))
        assert "injected fault" in str(info.value)
        arm(fault_control)
        with pytest.raises(DavBackupError):
            b.commit(expected_size=len(data_b))
        assert ns.lookup("/a.bin") is None and ns.lookup("/b.bin") is None
        for path, data in (("/a.bin", data_a), ("/b.bin", data_b)):
            again = ns.open_write(path)
            again.write(data)
            again.commit(expected_size=len(data))
            assert read_file(ns, path) == data
        assert check_repository(repo, read_data=True).ok
    finally:
        repo.close()


def test_append_enospc_is_storage_full_and_the_pack_goes_on(tmp_path: Path, fault_control: Path):
    repo = init_repo(tmp_path / "repo")
    try:
        ns = repo.namespace(USER)
        arm(fault_control, {"op": "append", "error": "ENOSPC", "times": 1})
        pending = ns.open_write("/x.bin")
        with pytest.raises(StorageFull):
            pending.write(os.urandom(MiB))
            pending.commit()
        pending.abort()
        data = os.urandom(MiB)
        again = ns.open_write("/x.bin")
        again.write(data)
        again.commit(expected_size=len(data))
        assert read_file(ns, "/x.bin") == data
        assert check_repository(repo, read_data=True).ok
    finally:
        repo.close()


def test_failed_fsync_inside_the_group_commit_fails_the_write(tmp_path: Path, fault_control: Path):
    """A small write syncs its pack inside the catalog transaction; a failed sync there
    must fail the write (it once deadlocked: the broken pack was sealed from inside
    the transaction)."""
    repo = init_repo(tmp_path / "repo")
    try:
        ns = repo.namespace(USER)
        arm(fault_control, {"op": "sync", "error": "EIO"})
        pending = ns.open_write("/small.bin")
        pending.write(b"small" * 1000)
        with pytest.raises(DavBackupError):
            pending.commit()
        arm(fault_control)
        again = ns.open_write("/small.bin")
        again.write(b"small" * 1000)
        again.commit()
        assert read_file(ns, "/small.bin") == b"small" * 1000
        assert check_repository(repo, read_data=True).ok
    finally:
        repo.close()
