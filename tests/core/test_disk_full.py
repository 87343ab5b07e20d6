"""A real full disk: the repository on a 64 MiB tmpfs, a real server, real clients.

Issue 8, item 1: on a full filesystem PUTs are refused with 507; parallel PUTs of an
already-stored file and parallel MKCOLs are either done or refused, never 201 for
something that does not exist; catalog writes then answer 507, not 500; DELETE and
``gc`` still run thanks to the space reserve (davbackup/reserve.py); and once space
is freed, writes work again without a restart.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.server_fixtures import DEFAULT_USERS, DavServer, _env, create_repository, davbackup, free_port
from tests.tmpfs import fill, mounted_tmpfs

MiB = 1024 * 1024
#: at least the live bytes of a pack gc must rewrite (the default, 64, covers half a pack)
RESERVE_MIB = 16


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small", "64m") as mnt:
        yield mnt


@pytest.fixture
def full_server(tmp_path: Path, tmpfs: Path) -> Iterator[DavServer]:
    """A server whose repository lives on the tmpfs (logs and config stay outside)."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    users = dict(DEFAULT_USERS)
    repo = tmpfs / "repo"
    create_repository(repo, _env(workdir), users)
    config = workdir / "davbackup.yaml"
    config.write_text(f"storage:\n  reserve_mib: {RESERVE_MIB}\n")
    server = DavServer(workdir=workdir, repo=repo, port=free_port(), users=users, config=config)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except Exception:
            server.kill()


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _parallel(n: int, fn) -> list[requests.Response]:
    results: list[requests.Response] = [None] * n  # type: ignore[list-item]
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_full_disk(full_server: DavServer, tmpfs: Path) -> None:
    server = full_server
    s = server.session("alice")
    url = server.url
    assert (server.repo / "reserve").stat().st_size == RESERVE_MIB * MiB
    stored: dict[str, bytes] = {}

    # 1. fill the disk with uploads until one is refused with 507
    assert s.request("MKCOL", f"{url}/data").status_code == 201
    refused = None
    for i in range(40):
        body = os.urandom(3 * MiB)
        r = s.put(f"{url}/data/f{i}.bin", data=body)
        if r.status_code == 201:
            stored[f"/data/f{i}.bin"] = body
            continue
        refused = (i, r)
        break
    assert refused is not None, "64 MiB never filled up"
    i, r = refused
    assert r.status_code == 507, (r.status_code, r.text)
    assert s.head(f"{url}/data/f{i}.bin").status_code == 404
    assert len(stored) >= 5
    # what is left (torn bytes were given back) goes to another user of the disk
    fill(tmpfs / "filler")
    assert _free(tmpfs) < MiB

    # 2. parallel PUTs of an already-stored file: stored (201 and there) or refused (507, absent)
    known_path, known = next(iter(stored.items()))
    results = _parallel(8, lambda n: server.session("alice").put(f"{url}/data/dup{n}.bin", data=known))
    for n, r in enumerate(results):
        assert r.status_code in (201, 507), (r.status_code, r.text)
        got = s.get(f"{url}/data/dup{n}.bin")
        if r.status_code == 201:
            assert got.status_code == 200 and got.content == known
            stored[f"/data/dup{n}.bin"] = known
        else:
            assert got.status_code == 404, f"dup{n}: refused with 507 but exists"

    # 3. parallel MKCOLs: created (201 and there) or refused (507, absent)
    results = _parallel(8, lambda n: server.session("alice").request("MKCOL", f"{url}/dir{n}"))
    for n, r in enumerate(results):
        assert r.status_code in (201, 507), (r.status_code, r.text)
        exists = s.request("PROPFIND", f"{url}/dir{n}", headers={"Depth": "0"}).status_code == 207
        assert exists == (r.status_code == 201), f"dir{n}: {r.status_code} but exists={exists}"

    # 4. catalog writes on the full disk answer 507 (or succeed), never 500
    lock_body = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
                 b"</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>")
    for method, path, kwargs in [
        ("MKCOL", "/more", {}),
        ("LOCK", known_path, {"data": lock_body, "headers": {"Content-Type": "application/xml"}}),
        ("MOVE", known_path, {"headers": {"Destination": f"{url}/data/moved.bin"}}),
        ("COPY", known_path, {"headers": {"Destination": f"{url}/data/copied.bin"}}),
        ("PUT", "/data/new.bin", {"data": os.urandom(MiB)}),
    ]:
        r = s.request(method, url + path, **kwargs)
        assert r.status_code == 507, (method, r.status_code, r.text)
    assert s.get(url + known_path).content == known  # the MOVE did not happen

    # 5. DELETE works on the full disk (it releases the reserve)...
    victims = [p for p in stored if p != known_path]
    for path in victims:
        r = s.delete(url + path)
        assert r.status_code == 204, (path, r.status_code, r.text)
        stored.pop(path)
        assert s.head(url + path).status_code == 404
    assert not (server.repo / "reserve").exists()
    # ... and while the reserve is released, writes are refused before they touch the disk
    assert s.put(f"{url}/data/new.bin", data=b"x" * 1000).status_code == 507

    # 6. history keeps deleted files (30 days by default): the administrator lets them go,
    # then gc runs beside the server on the full disk and frees their space
    before = _free(tmpfs)
    davbackup(["history", "set", "--repo", str(server.repo), "--keep-all", "0", "--daily", "0", "--weekly", "0"],
              server.env)
    result = subprocess.run(
        [*_cli(), "gc", "--repo", str(server.repo), "--grace", "0"],
        capture_output=True, text=True, env=server.env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    # 7. writes work again without a restart: the server closes its handles of the packs
    # gc deleted (an open file keeps its space), takes its reserve back, and stores
    body = os.urandom(2 * MiB)
    r = s.put(f"{url}/data/after.bin", data=body)
    assert r.status_code == 201, (r.status_code, r.text, result.stdout, f"{_free(tmpfs)} bytes free")
    stored["/data/after.bin"] = body
    assert (server.repo / "reserve").stat().st_size == RESERVE_MIB * MiB
    assert _free(tmpfs) > before + RESERVE_MIB * MiB, result.stdout
    assert s.request("MKCOL", f"{url}/after-{uuid.uuid4().hex[:6]}").status_code == 201
    for path, data in stored.items():
        assert s.get(url + path).content == data, path
    server.stop()
    (tmpfs / "filler").unlink()
    davbackup(["check", "--repo", str(server.repo), "--read-data"], server.env)


def test_offline_gc_on_a_full_disk(full_server: DavServer, tmpfs: Path) -> None:
    """gc without a server, on a disk with no byte free, still runs (issue 8: it died
    with ENOSPC) because it releases the reserve first."""
    server = full_server
    s = server.session("alice")
    for i in range(6):
        assert s.put(f"{server.url}/g{i}.bin", data=os.urandom(2 * MiB)).status_code == 201
    for i in range(5):
        assert s.delete(f"{server.url}/g{i}.bin").status_code == 204
    server.stop()
    davbackup(["history", "set", "--repo", str(server.repo), "--keep-all", "0", "--daily", "0", "--weekly", "0"],
              server.env)
    fill(tmpfs / "filler")
    assert _free(tmpfs) < MiB
    result = subprocess.run([*_cli(), "gc", "--repo", str(server.repo)], capture_output=True, text=True,
                            env=server.env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _free(tmpfs) > (RESERVE_MIB + 8) * MiB, result.stdout  # the reserve and the deleted files
    (tmpfs / "filler").unlink()
    davbackup(["check", "--repo", str(server.repo), "--read-data"], server.env)


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "davbackup"]
