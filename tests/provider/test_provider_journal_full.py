"""A real full disk under the metadata journal: the packs on a small tmpfs of their own,
the catalog on another filesystem that has room (DESIGN.md §20.2).

Once the pack filesystem is full, a write that needs no new chunk (MKCOL, PROPPATCH,
MOVE, COPY, DELETE, a PUT of content already stored) can still commit to the catalog;
only its journal record cannot be written. Such a write must be refused with 507 and
change nothing, or the catalog would hold a change the packs do not (and `recover`
would lose it). Every write that was answered 2xx must be there, and after the disk
is freed, a recovery from the packs alone gives exactly what the server showed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.recover_workload import differences, observe
from tests.server_fixtures import DEFAULT_USERS, DavServer, _env, create_repository, davbackup, free_port
from tests.tmpfs import fill, mounted_tmpfs

PROPPATCH = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:T="urn:davbackup-full">'
             "<D:set><D:prop><T:note>{}</T:note></D:prop></D:set></D:propertyupdate>")


@pytest.fixture
def packs_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "packs-fs", "8m") as mnt:
        yield mnt


@pytest.fixture
def server(tmp_path: Path, packs_tmpfs: Path) -> Iterator[DavServer]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    users = {"alice": DEFAULT_USERS["alice"]}
    repo = tmp_path / "repo"
    create_repository(repo, _env(workdir), users)
    # the pack directory on its own filesystem (as on a separate disk)
    shutil.copytree(repo / "packs", packs_tmpfs / "packs")
    shutil.rmtree(repo / "packs")
    (repo / "packs").symlink_to(packs_tmpfs / "packs")
    srv = DavServer(workdir=workdir, repo=repo, port=free_port(), users=users)
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


def _get(s: requests.Session, url: str) -> bytes | None:
    r = s.get(url, timeout=60)
    return r.content if r.status_code == 200 else None


def _exists(s: requests.Session, url: str) -> bool:
    return s.request("PROPFIND", url, headers={"Depth": "0"}, timeout=60).status_code == 207


def _note(s: requests.Session, url: str) -> str:
    r = s.request("PROPFIND", url, headers={"Depth": "0"}, timeout=60, data=(
        '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:T="urn:davbackup-full"><D:prop><T:note/>'
        "</D:prop></D:propfind>").encode())
    return r.text


def test_journal_on_a_full_pack_disk_refuses_and_recovers(server: DavServer, packs_tmpfs: Path) -> None:
    s = server.session("alice")
    url = server.url
    old, stored = os.urandom(50_000), os.urandom(60_000)
    assert s.request("MKCOL", f"{url}/d", timeout=60).status_code == 201
    assert s.put(f"{url}/d/a.bin", data=old, timeout=60).status_code == 201
    assert s.put(f"{url}/d/b.bin", data=stored, timeout=60).status_code == 201
    fill(packs_tmpfs / "filler")

    # Writes that add no chunk, in turns, until each kind has been refused at least
    # once: 2xx must have taken effect, 507 must have changed nothing. (The first ones
    # still fit: the server's journal pack keeps 128 KiB of blocks reserved past its records.)
    where = {"b": "b.bin"}  # b.bin's content moves between two names (see move)

    def mkcol(tag: str) -> tuple[requests.Response, Callable[[], bool]]:
        r = s.request("MKCOL", f"{url}/m-{tag}", timeout=60)
        return r, lambda: _exists(s, f"{url}/m-{tag}")

    def put_known(tag: str) -> tuple[requests.Response, Callable[[], bool]]:
        """A new version of a.bin whose content is stored already (its own old one, or b.bin's)."""
        body = stored if _get(s, f"{url}/d/a.bin") == old else old
        r = s.put(f"{url}/d/a.bin", data=body, timeout=60)
        return r, lambda: _get(s, f"{url}/d/a.bin") == body

    def proppatch(tag: str) -> tuple[requests.Response, Callable[[], bool]]:
        at = f"{url}/d/{where['b']}"
        r = s.request("PROPPATCH", at, data=PROPPATCH.format(tag).encode(), timeout=60,
                      headers={"Content-Type": "application/xml"})
        if r.status_code == 207 and "HTTP/1.1 507" in r.text:
            r.status_code = 507  # RFC 4918: the status is per property
        return r, lambda: f">{tag}<" in _note(s, at)

    def copy(tag: str) -> tuple[requests.Response, Callable[[], bool]]:
        r = s.request("COPY", f"{url}/d/{where['b']}", headers={"Destination": f"{url}/c-{tag}.bin"},
                      timeout=60)
        return r, lambda: _get(s, f"{url}/c-{tag}.bin") == stored

    def move(tag: str) -> tuple[requests.Response, Callable[[], bool]]:
        """A MOVE of b.bin's content to its other name: one write, no way back needed (a
        second MOVE would be a write of its own, which the full disk may refuse too)."""
        src, dst = where["b"], ("b2.bin" if where["b"] == "b.bin" else "b.bin")
        r = s.request("MOVE", f"{url}/d/{src}", headers={"Destination": f"{url}/d/{dst}"}, timeout=60)
        moved = _get(s, f"{url}/d/{dst}") == stored
        assert moved == (s.head(f"{url}/d/{src}", timeout=60).status_code == 404), "a MOVE half done"
        if moved:
            where["b"] = dst
        return r, lambda: moved

    def delete(tag: str) -> tuple[requests.Response, Callable[[], bool]]:
        name = f"{url}/m-{tag}"
        if not _exists(s, name):  # something to delete (if this MKCOL is refused, skip)
            made = s.request("MKCOL", name, timeout=60)
            if made.status_code != 201:
                return made, lambda: _exists(s, name)
        r = s.delete(name, timeout=60)
        return r, lambda: not _exists(s, name)

    kinds = {"MKCOL": mkcol, "PUT of stored content": put_known, "PROPPATCH": proppatch, "COPY": copy,
             "MOVE": move, "DELETE": delete}
    refused: set[str] = set()
    for _round in range(40):
        for kind, act in kinds.items():
            a_before = _get(s, f"{url}/d/a.bin")
            r, took_effect = act(uuid.uuid4().hex[:8])
            assert r.status_code in (201, 204, 207, 507), (kind, r.status_code, r.text)
            if r.status_code == 507:
                refused.add(kind)
                assert not took_effect(), f"{kind} refused with 507 but took effect"
                assert _get(s, f"{url}/d/a.bin") == a_before, "the previous version is not intact"
            else:
                assert took_effect(), f"{kind} answered {r.status_code} but did not take effect"
        if refused == set(kinds):
            break
    assert refused == set(kinds), f"never refused: {set(kinds) - refused}"
    assert " 507 " in server.log()  # (the access log)

    # space again: writes work without a restart
    (packs_tmpfs / "filler").unlink()
    assert s.request("MKCOL", f"{url}/after", timeout=60).status_code == 201
    assert s.put(f"{url}/after/new.bin", data=b"after the full disk", timeout=60).status_code == 201
    shown = observe(url, {"alice": server.password("alice")})
    server.stop()

    for p in server.repo.glob("catalog.sqlite*"):
        p.unlink()
    davbackup(["recover", "--repo", str(server.repo)], server.env)  # exit code 1 on any problem
    server.start()
    again = observe(url, {"alice": server.password("alice")})
    assert again == shown, differences(shown, again)
    server.stop()
    davbackup(["check", "--repo", str(server.repo), "--read-data"], server.env)
