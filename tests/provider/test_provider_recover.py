"""`davbackup recover` against a real server: the packs alone are the backup (issue 10).

A randomized workload of three users runs against ``davbackup serve`` on loopback;
then the catalog is deleted, truncated or has pages overwritten, the server refuses to
start on it (naming `davbackup recover`), `recover` rebuilds it from config.json, the
key files and the packs, and a new server must show every user exactly what the old
one showed: the live tree (names, bytes, ETags, dead properties, quotas, with the
users' own passwords) and every point in time under ``/.history/``, and the live tree
must equal the test's model.

The crash variant SIGKILLs the server at random points of the workload
(``DAVBACKUP_TEST_KILLS`` times, 4 by default; the issue's figure is 20), each time
deletes the catalog, recovers and checks that every acknowledged write is there.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.recover_workload import Workload, differences, drive, live_as_model, observe
from tests.server_fixtures import ROOT, DavServer, davbackup, launch

USERS = {
    "alice": ("alice-password", "rw"),
    "bob": ("bob-password", "rw"),
    "carol": ("carol-password", "rw"),
}
PASSWORDS = {name: pw for name, (pw, _role) in USERS.items()}
KILLS = int(os.environ.get("DAVBACKUP_TEST_KILLS", "4"))


def catalog_files(repo: Path) -> list[Path]:
    return [repo / "catalog.sqlite", repo / "catalog.sqlite-wal", repo / "catalog.sqlite-shm"]


def run_cli(args: list[str], server: DavServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "davbackup", *args], capture_output=True, text=True,
                          env=server.env, cwd=ROOT, timeout=300)


def recover(server: DavServer, *, force: bool = False) -> subprocess.CompletedProcess[str]:
    result = run_cli(["recover", "--repo", str(server.repo), *(["--force"] if force else [])], server)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "users" in result.stdout and "locks and unfinished upload sessions" in result.stdout
    return result


def damage(repo: Path, how: str, rng: random.Random) -> None:
    path = repo / "catalog.sqlite"
    if how == "delete":
        for p in catalog_files(repo):
            p.unlink(missing_ok=True)
    elif how == "truncate":
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(rng.randrange(1, size // 2))
    elif how == "pages":
        size = path.stat().st_size
        page = 4096
        with open(path, "r+b") as f:
            for n in rng.sample(range(size // page), min(4, size // page)):
                f.seek(n * page)
                f.write(rng.randbytes(page))


def assert_refuses_to_start(server: DavServer) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "davbackup", "serve", "--repo", str(server.repo), "--host", "127.0.0.1",
         "--port", str(server.port)],
        capture_output=True, text=True, env=server.env, cwd=ROOT, timeout=60,
    )
    assert proc.returncode != 0
    assert "davbackup recover" in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("how", ["delete", "truncate", "pages"])
def test_recover_rebuilds_what_the_server_showed(tmp_path: Path, how: str) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    server = launch(tmp_path / "dav", users=USERS)
    try:
        davbackup(["user", "quota", "carol", "--repo", str(server.repo), "--quota", "500M"], server.env)
        work = Workload(server.url, PASSWORDS, seed)
        ops = [work.step() for _ in range(70)]
        # a restore from history, certainly
        work._mark("alice", work.sessions["alice"], work.model.users["alice"], work.model.users["alice"])
        ops += [work.step() for _ in range(30)]
        shown = observe(server.url, PASSWORDS, quotas=frozenset({"carol"}))
        assert live_as_model(shown) == work.model.users, f"seed {seed}: {ops}"
        server.stop()

        damage(server.repo, how, rng)
        if how != "pages":  # random pages may land on free space; the others never pass
            assert_refuses_to_start(server)
        recover(server, force=how != "delete")
        if how != "delete":
            assert list(server.repo.glob("catalog.sqlite.before-recover-*")), "the old catalog was kept aside"
        server.start()
        again = observe(server.url, PASSWORDS, quotas=frozenset({"carol"}))
        assert live_as_model(again) == work.model.users, f"seed {seed}"
        assert again == shown, f"seed {seed}: {differences(shown, again)}"
        # and it goes on working: a write, a clean check
        work.step()
        server.stop()
        result = run_cli(["check", "--repo", str(server.repo), "--read-data"], server)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        server.kill()


def test_recover_refuses_to_overwrite_a_catalog(tmp_path: Path) -> None:
    server = launch(tmp_path / "dav", users={"alice": USERS["alice"]})
    server.stop()
    before = (server.repo / "catalog.sqlite").read_bytes()
    result = run_cli(["recover", "--repo", str(server.repo)], server)
    assert result.returncode == 2 and "--force" in result.stderr
    assert (server.repo / "catalog.sqlite").read_bytes() == before


@pytest.mark.slow
def test_recover_after_sigkills_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    server = launch(tmp_path / "dav", users=USERS)
    try:
        work = Workload(server.url, PASSWORDS, seed)
        for round_no in range(KILLS):
            stop = threading.Event()
            failure: list[BaseException] = []

            worker = threading.Thread(target=drive, args=(work, stop, failure))
            worker.start()
            time.sleep(rng.uniform(0.5, 3.0))
            server.kill()
            stop.set()
            worker.join(60)
            assert not worker.is_alive()
            candidates = [work.model.users]
            if failure and work.before is not None and work.after is not None:
                candidates = [work.before.users, work.after.users]
            damage(server.repo, "delete", rng)
            recover(server)
            server.start()
            live = live_as_model(observe(server.url, PASSWORDS, history=False))
            assert live in candidates, f"seed {seed}, round {round_no}: an acknowledged write is missing"
            work.model.users = live  # the write in flight either happened or did not
            work.before = work.after = None
    finally:
        server.kill()


def test_server_refuses_a_catalog_with_a_bad_row(tmp_path: Path) -> None:
    server = launch(tmp_path / "dav", users={"alice": USERS["alice"]})
    server.stop()
    conn = sqlite3.connect(server.repo / "catalog.sqlite")
    conn.execute("UPDATE nodes SET name_enc = zeroblob(40) WHERE id = (SELECT root_id FROM users)")
    conn.commit()
    conn.close()
    assert_refuses_to_start(server)
    for p in catalog_files(server.repo):
        p.unlink(missing_ok=True)
    assert_refuses_to_start(server)


def test_recover_from_the_object_store_alone(tmp_path: Path, s3_bucket) -> None:  # type: ignore[no-untyped-def]
    """Packs, config and keys on Ceph RGW; the whole local directory is lost."""
    from tests.server_fixtures import _env, free_port

    env = _env(tmp_path)
    repo = tmp_path / "repo"
    url = s3_bucket.url("team/rec")
    davbackup(["init", "--repo", str(repo), "--packs", url], env)
    users = {"alice": USERS["alice"], "bob": USERS["bob"]}
    for name, (password, role) in users.items():
        davbackup(["user", "add", name, "--repo", str(repo), "--role", role], env, stdin=password + "\n")
    server = DavServer(workdir=tmp_path, repo=repo, port=free_port(), users=users, extra_args=["--packs", url])
    server.start()
    try:
        work = Workload(server.url, {n: pw for n, (pw, _r) in users.items()}, 7)
        for _ in range(25):
            work.step()
        shown = observe(server.url, {n: pw for n, (pw, _r) in users.items()}, history=False)
        server.kill()  # acknowledged means in the store: no clean shutdown needed
        import shutil

        shutil.rmtree(repo)
        result = run_cli(["recover", "--repo", str(repo), "--packs", url], server)
        assert result.returncode == 0, result.stdout + result.stderr
        server.extra_args = []  # packs.url was recorded by recover
        server.start()
        again = observe(server.url, {n: pw for n, (pw, _r) in users.items()}, history=False)
        assert again == shown, differences(shown, again)
        assert live_as_model(again) == work.model.users
    finally:
        server.kill()
