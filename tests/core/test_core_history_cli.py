"""The administrator's history commands, run as real subprocesses: `davbackup history
show|set|prune`, `davbackup restore`, `davbackup user quota`, `davbackup stats --user`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from davbackup import clock
from davbackup.history import format_moment
from davbackup.repository import Repository
from davbackup.retention import DAY
from tests.core_fixtures import read_file, write_file
from tests.server_fixtures import PASSPHRASE, _env


def cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "davbackup", *args], input=stdin, capture_output=True,
                          text=True, env=_env(home), timeout=120)


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    """alice's report.txt written 200, 100 and 50 days ago and today; old.txt deleted 60 days ago."""
    root = tmp_path / "repo"
    assert cli(tmp_path, "init", "--repo", str(root)).returncode == 0
    assert cli(tmp_path, "user", "add", "alice", "--repo", str(root), stdin="alice-password-1\n").returncode == 0
    now = time.time()
    try:
        with Repository.open(root, PASSPHRASE) as repo:
            ns = repo.namespace("alice")
            for days, text in ((200, b"v200"), (100, b"v100"), (50, b"v50")):
                # at the start of a second: report.txt and old.txt make one point in time
                clock.set_offset(-days * DAY - time.time() % 1)
                write_file(ns, "/report.txt", text)
                if days == 200:
                    write_file(ns, "/old.txt", b"old")
            clock.set_offset(-60 * DAY)
            ns.delete("/old.txt")
            clock.set_offset(0)
            write_file(ns, "/report.txt", b"today")
    finally:
        clock.set_offset(0)
    assert time.time() - now < 60
    return root


def test_show_prune_and_restore(repo_dir: Path, tmp_path: Path) -> None:
    home = tmp_path
    shown = cli(home, "history", "show", "--repo", str(repo_dir), "--user", "alice")
    assert shown.returncode == 0, shown.stderr
    assert "every point in time for 30 days" in shown.stdout
    assert shown.stdout.count("\n  ") == 5  # five points in time listed
    nothing = cli(home, "history", "prune", "--repo", str(repo_dir), "--dry-run")
    assert "would drop 0 points in time" in nothing.stdout, nothing.stdout  # the defaults keep all five
    assert cli(home, "history", "set", "--repo", str(repo_dir), "--keep-all", "30", "--daily", "60",
               "--weekly", "90").returncode == 0
    dry = cli(home, "history", "prune", "--repo", str(repo_dir), "--dry-run")
    assert dry.returncode == 0 and "would drop 2 points in time" in dry.stdout, dry.stdout  # 200 and 100 days
    pruned = cli(home, "history", "prune", "--repo", str(repo_dir))
    assert pruned.returncode == 0 and "dropped 2 points in time" in pruned.stdout, pruned.stdout
    bad = cli(home, "history", "set", "--repo", str(repo_dir), "--keep-all", "100", "--daily", "10")
    assert bad.returncode == 2 and "keep-all <= daily" in bad.stderr
    # restore the version of 50 days ago in place, then the deleted file elsewhere
    at = format_moment(int(time.time() - 50 * DAY + 60))
    done = cli(home, "restore", "--repo", str(repo_dir), "--user", "alice", "--at", at, "--path", "/report.txt")
    assert done.returncode == 0 and "replaced" in done.stdout, done.stderr
    gone = cli(home, "restore", "--repo", str(repo_dir), "--user", "alice", "--at",
               format_moment(int(time.time() - 61 * DAY)), "--path", "/old.txt", "--to", "/old-restored.txt")
    assert gone.returncode == 3 and "did not exist" in gone.stderr  # pruned with the 200-day moment
    malformed = cli(home, "restore", "--repo", str(repo_dir), "--user", "alice", "--at", "yesterday")
    assert malformed.returncode == 2
    with Repository.open(repo_dir, PASSPHRASE, mode="read") as repo:
        ns = repo.namespace("alice")
        assert read_file(ns, "/report.txt") == b"v50"
        assert ns.lookup("/old-restored.txt") is None


def test_quota_and_user_stats(repo_dir: Path, tmp_path: Path) -> None:
    home = tmp_path
    out = cli(home, "user", "quota", "alice", "--repo", str(repo_dir), "--quota", "1M")
    assert out.returncode == 0 and "of 1.00 MiB" in out.stdout, out.stdout + out.stderr
    assert cli(home, "user", "quota", "alice", "--repo", str(repo_dir), "--quota", "lots").returncode == 2
    stats = cli(home, "stats", "--repo", str(repo_dir), "--user", "alice")
    assert stats.returncode == 0
    assert "1.00 MiB (1024.00 KiB free)" in stats.stdout, stats.stdout
    assert "history versions       4" in stats.stdout and "history size           14 B" in stats.stdout
    listed = cli(home, "user", "list", "--repo", str(repo_dir))
    assert "5 B of 1.00 MiB" in listed.stdout
    assert cli(home, "user", "quota", "nobody", "--repo", str(repo_dir)).returncode == 3
