"""Crash safety: a writer killed with SIGKILL at random times loses nothing it acknowledged.

``tests/crash_writer.py`` writes, overwrites and deletes files from two threads and
prints ``ACK`` only after ``commit()``/``delete()`` returned. After every kill the
repository is reopened and each path must hold its last acknowledged content, or the
content of the one operation that was in flight when the process died.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from davbackup.errors import NotFound
from davbackup.maintenance.check import check_repository
from davbackup.maintenance.gc import collect_garbage
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, USER, init_repo

WRITER = Path(__file__).parents[1] / "crash_writer.py"
ROOT = Path(__file__).resolve().parents[2]
ABSENT = "<absent>"
ITERATIONS = 20


def start_writer(repo_dir: Path, seed: int) -> subprocess.Popen:
    env = dict(os.environ, DAVBACKUP_KDF_MEMORY_KIB="1024", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(repo_dir), str(seed), "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
        bufsize=0,  # unbuffered: readline() must not swallow lines that communicate() then misses
    )


def actual(ns, path: str) -> str:
    try:
        reader = ns.open_read(path)
    except NotFound:
        return ABSENT
    with reader:
        h = hashlib.sha256()
        while True:
            piece = reader.read(1 << 20)
            if not piece:
                break
            h.update(piece)
        return h.hexdigest()


class Model:
    """What each path may hold: its acknowledged state, plus an in-flight alternative."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.inflight: dict[str, str] = {}
        self.acks = 0

    def feed(self, lines: list[str]) -> set[str]:
        touched: set[str] = set()
        for line in lines:
            parts = line.split()
            if not parts or parts[0] == "READY":
                continue
            kind, path = parts[0], parts[1]
            touched.add(path)
            if kind == "BEGIN":
                self.inflight[path] = parts[2]
            elif kind == "BEGIN-DEL":
                self.inflight[path] = ABSENT
            elif kind == "ACK":
                assert self.inflight.get(path) == parts[2], [ln for ln in lines if path in ln]
                self.inflight.pop(path)
                self.state[path] = parts[2]
                self.acks += 1
            elif kind == "ACK-DEL":
                assert self.inflight.pop(path) == ABSENT
                self.state[path] = ABSENT
                self.acks += 1
            else:
                raise AssertionError(f"unexpected writer output {line!r}")
        return touched

    def verify(self, ns, paths) -> None:
        for path in sorted(paths):
            allowed = {self.state.get(path, ABSENT)}
            if path in self.inflight:
                allowed.add(self.inflight[path])
            got = actual(ns, path)
            assert got in allowed, f"{path}: content {got[:12]} not in acknowledged/in-flight {allowed}"
            self.state[path] = got  # the crash decided the in-flight operation
        for path in paths:
            self.inflight.pop(path, None)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    init_repo(repo_dir, small=True).close()
    rng = random.Random(20240601)
    model = Model()
    started = time.monotonic()
    for iteration in range(ITERATIONS):
        proc = start_writer(repo_dir, iteration)
        lines: list[str] = []
        assert proc.stdout is not None
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.4))  # may hit the open/recovery phase
        else:
            ready = proc.stdout.readline().decode()
            assert ready == "READY\n", (ready, proc.stderr.read().decode() if proc.stderr else "")
            time.sleep(rng.uniform(0.02, 0.6))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err.decode()
        assert b"Traceback" not in err, err.decode()
        text = out.decode()
        lines = [ln for ln in text.split("\n")[:-1]]  # a torn last line carries no ACK
        touched = model.feed(lines)

        repo = Repository.open(repo_dir, PASSPHRASE, mode="read")
        try:
            model.verify(repo.namespace(USER), touched)
        finally:
            repo.close()
    print(f"{model.acks} acknowledged operations, {len(model.state)} paths")
    assert model.acks >= 3 * ITERATIONS, f"only {model.acks} acknowledged operations"

    # recovery by a rw open, then every file ever acknowledged, a full check, and gc
    repo = Repository.open(repo_dir, PASSPHRASE)
    try:
        ns = repo.namespace(USER)
        model.verify(ns, set(model.state))
        report = check_repository(repo, read_data=True)
        assert report.ok, report.problems
        assert repo.catalog.reader().execute("SELECT count(*) FROM packs WHERE state='open'").fetchone()[0] == 0
    finally:
        repo.close()
    admin = Repository.open(repo_dir, PASSPHRASE, mode="admin")
    try:
        collect_garbage(admin, grace_seconds=0)
        report = check_repository(admin, read_data=True)
        assert report.ok, report.problems
        assert not report.warnings, report.warnings
        model.verify(admin.namespace(USER), set(model.state))
    finally:
        admin.close()
    assert time.monotonic() - started < 120


GC_CHILD = (
    "import os, sys; os.environ['DAVBACKUP_KDF_MEMORY_KIB'] = '1024'\n"
    "from davbackup.repository import Repository\n"
    "from davbackup.maintenance.gc import collect_garbage\n"
    "repo = Repository.open(sys.argv[1], sys.argv[2], mode='admin')\n"
    "print('START', flush=True)\n"
    "collect_garbage(repo, grace_seconds=0, rewrite_threshold=0.9)\n"
    "print('DONE', flush=True)\n"
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gc_killed_at_random_points_loses_nothing(tmp_path: Path) -> None:
    """gc rewrites and deletes packs; SIGKILL anywhere in it must leave every file readable."""
    repo_dir = tmp_path / "repo"
    init_repo(repo_dir, small=True).close()
    rng = random.Random(7)
    expected: dict[str, bytes] = {}
    finished = 0
    for iteration in range(12):
        with Repository.open(repo_dir, PASSPHRASE) as repo:
            ns = repo.namespace(USER)
            for i in range(40):
                data = rng.randbytes(rng.randrange(1, 60_000))
                path = f"/i{iteration}-{i}.bin"
                pending = ns.open_write(path)
                pending.write(data)
                pending.commit()
                expected[path] = data
            for path in rng.sample(sorted(expected), len(expected) // 3):
                ns.delete(path)
                del expected[path]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-c", GC_CHILD, str(repo_dir), PASSPHRASE],
                                stdout=subprocess.PIPE, env=env, cwd=ROOT, bufsize=0)
        assert proc.stdout is not None and proc.stdout.readline() == b"START\n"
        time.sleep(rng.uniform(0, 0.3))  # a gc run here takes ~0.1-0.3 s
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        finished += b"DONE" in out
        with Repository.open(repo_dir, PASSPHRASE, mode="read") as repo:
            ns = repo.namespace(USER)
            for path, data in expected.items():
                with ns.open_read(path) as reader:
                    assert reader.read() == data, path
            report = check_repository(repo, read_data=True)
            assert report.ok, report.problems
    with Repository.open(repo_dir, PASSPHRASE, mode="admin") as admin:
        collect_garbage(admin, grace_seconds=0)
        report = check_repository(admin, read_data=True)
        assert report.ok and not report.warnings, (report.problems, report.warnings)
    print(f"gc finished before the kill in {finished} of 12 runs")
