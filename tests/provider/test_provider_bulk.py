"""A large COPY or DELETE killed half-way (SIGKILL on a real server) leaves nothing half done.

The server's tree of about 3,300 nodes is above the size at which COPY and DELETE
work in batches (davbackup/tree_bulk.py, DESIGN.md §19). Fault injection slows every
catalog commit down (DAVBACKUP_TEST_FAULTS, a delay only), and the test watches the
catalog from outside until the operation is provably half-way — a staging tree with
batches in it, or a trash tree partly moved to history — then kills the server.
After the restart no client sees any part of the copy, the deleted tree is gone
and every point in time before the deletion still shows all of it, the quota is
exact, and `davbackup check` reports nothing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests
from lxml import etree

from davbackup.repository import Repository
from davbackup.tree import STAGING, TRASH
from tests.fault_fixtures import FaultyServer, launch_faulty
from tests.server_fixtures import PASSPHRASE, DavServer, davbackup

FILES = 100
DOUBLINGS = 5  # 2**5 folders of 101 nodes: 3,233 nodes below /tree


@pytest.fixture()
def faulty(tmp_path: Path) -> Iterator[FaultyServer]:
    server = launch_faulty(tmp_path)
    s = server.server.session()
    url = server.server.url
    assert s.request("MKCOL", f"{url}/tree/").status_code == 201
    assert s.request("MKCOL", f"{url}/tree/p0/").status_code == 201
    for i in range(FILES):
        assert s.put(f"{url}/tree/p0/f{i}.txt", data=f"file {i}\n".encode() * 10).status_code == 201
    for d in range(DOUBLINGS):  # /tree/pN/ copies of the folders so far
        for k in range(2**d):
            answer = s.request("COPY", f"{url}/tree/p{k}/", headers={"Destination": f"{url}/tree/p{k + 2**d}/"})
            assert answer.status_code == 201
    try:
        yield server
    finally:
        server.server.stop()


def catalog_count(server: FaultyServer, sql: str, *args: object) -> int:
    conn = sqlite3.connect(f"file:{server.server.repo / 'catalog.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


def kill_when(server: FaultyServer, request: threading.Thread, ready: str, *args: object) -> None:
    """Start ``request`` and SIGKILL the server as soon as ``ready`` counts more than 0."""
    request.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if catalog_count(server, ready, *args) > 0:
            server.server.kill()
            request.join(30)
            return
        time.sleep(0.02)
    raise AssertionError("the operation never got half-way")


def history_listing(repo_dir: Path, second: int) -> list[str]:
    repo = Repository.open(repo_dir, PASSPHRASE, mode="read")
    try:
        point = repo.namespace("alice").history().at(second)

        def walk(path: str) -> Iterator[str]:
            for entry in point.list(path):
                yield entry.path
                if entry.is_dir:
                    yield from walk(entry.path)

        return sorted(walk("/tree"))
    finally:
        repo.close()


def used_bytes(repo_dir: Path) -> int:
    repo = Repository.open(repo_dir, PASSPHRASE, mode="read")
    try:
        return repo.users.usage("alice")[0]
    finally:
        repo.close()


def test_copy_killed_half_way_leaves_no_trace(faulty: FaultyServer):
    server = faulty.server
    nodes = catalog_count(faulty, "SELECT count(*) FROM nodes")
    used = used_bytes(server.repo)
    faulty.arm({"op": "commit", "delay": 0.25})
    copy = threading.Thread(target=lambda: _quietly(lambda: server.session().request(
        "COPY", f"{server.url}/tree/", headers={"Destination": f"{server.url}/copy/"}, timeout=60)))
    # the staging top and at least one batch below it are committed: half-way
    kill_when(faulty, copy, "SELECT count(*) FROM nodes n JOIN nodes t ON n.parent_id = t.id WHERE t.parent_id >= ?",
              STAGING)
    assert catalog_count(faulty, "SELECT count(*) FROM nodes") > nodes
    faulty.clear()
    faulty.restart()
    assert server.session().request("PROPFIND", f"{server.url}/copy/", headers={"Depth": "0"}).status_code == 404
    assert catalog_count(faulty, "SELECT count(*) FROM nodes") == nodes
    assert catalog_count(faulty, "SELECT count(*) FROM nodes WHERE parent_id >= ?", TRASH) == 0
    server.stop()
    assert used_bytes(server.repo) == used
    out = davbackup(["check", "--repo", str(server.repo)], server.env).stdout
    assert out.startswith("check: no problems"), out  # no warning line either


def test_delete_killed_half_way_is_finished_and_history_keeps_all(faulty: FaultyServer):
    server = faulty.server
    time.sleep(1.1)
    moment = int(time.time()) - 1  # after the tree's last change, before the delete's second
    before = history_listing_live(server)
    assert len(before) == 2**DOUBLINGS * (FILES + 1)
    nodes = catalog_count(faulty, "SELECT count(*) FROM nodes")
    faulty.arm({"op": "commit", "delay": 0.25})
    delete = threading.Thread(target=lambda: _quietly(lambda: server.session().delete(
        f"{server.url}/tree/", timeout=60)))
    # in the trash, and some of it already moved to history
    kill_when(faulty, delete, "SELECT count(*) FROM nodes WHERE parent_id >= ? AND parent_id < ?"
              f" AND (SELECT count(*) FROM nodes) < {nodes}", TRASH, STAGING)
    faulty.clear()
    faulty.restart()
    session = server.session()
    assert session.request("PROPFIND", f"{server.url}/tree/", headers={"Depth": "0"}).status_code == 404
    assert catalog_count(faulty, "SELECT count(*) FROM nodes WHERE parent_id >= ?", TRASH) == 0
    listed = session.request("PROPFIND", f"{server.url}/.history/", headers={"Depth": "1"})
    assert listed.status_code == 207
    server.stop()
    assert history_listing(server.repo, moment) == before
    assert used_bytes(server.repo) == 0
    out = davbackup(["check", "--repo", str(server.repo)], server.env).stdout
    assert out.startswith("check: no problems"), out  # no warning line either


def history_listing_live(server: DavServer) -> list[str]:
    """The live /tree as paths over WebDAV (PROPFIND, folder by folder)."""
    session = server.session()
    paths: list[str] = []

    def walk(path: str) -> None:
        answer = session.request("PROPFIND", f"{server.url}{path}", headers={"Depth": "1"})
        assert answer.status_code == 207
        for href in _hrefs(answer.text):
            if href.rstrip("/") == path.rstrip("/"):
                continue
            paths.append(href.rstrip("/"))
            if href.endswith("/"):
                walk(href)

    walk("/tree/")
    return sorted(paths)


def _hrefs(xml: str) -> list[str]:
    root = etree.fromstring(xml.encode())
    return [unquote(el.text) for el in root.iter("{DAV:}href")]


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except requests.RequestException:
        pass  # the server was killed under the request
