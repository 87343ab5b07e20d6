"""Limits on what a user can grow through locks and XML bodies (issue 8 item 7): locks
per resource and per user, the owner text of a lock, LOCK and PROPPATCH body sizes,
all refused with a 4xx and nothing stored; and the by-resource lock index."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from davbackup.repository import Repository
from provider.locks import LockLimits, RepositoryLockStorage
from provider.paths import ref_url
from tests.provider_http_helpers import XML, dead_prop, lock_token, proppatch
from tests.server_fixtures import DavServer, launch

LIMITS = """
webdav:
  max_locks_per_resource: 4
  max_locks_per_user: 6
  max_lock_owner: 200
  max_lock_body: 2048
  max_proppatch_body: 4096
"""


def shared_lock_body(owner: str = "tests") -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
            "<D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype>"
            f"<D:owner>{owner}</D:owner></D:lockinfo>")


def take_lock(session: requests.Session, url: str, owner: str = "tests") -> requests.Response:
    return session.request("LOCK", url, data=shared_lock_body(owner),
                           headers={**XML, "Depth": "0", "Timeout": "Second-3600"})


def lock_rows(server: DavServer) -> int:
    conn = sqlite3.connect(f"file:{server.repo / 'catalog.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM locks").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    server = launch(tmp_path_factory.mktemp("lock-limits"), config_yaml=LIMITS)
    try:
        yield server
    finally:
        server.stop()


def test_locks_per_resource_and_per_user(limited: DavServer) -> None:
    with limited.session("alice") as alice:
        url = limited.url + "/many-locks.txt"
        alice.put(url, data=b"x")
        tokens = []
        for _ in range(4):
            response = take_lock(alice, url)
            assert response.status_code == 200
            tokens.append(lock_token(response))
        refused = take_lock(alice, url)
        assert refused.status_code == 403
        assert "at most 4 locks" in refused.text
        assert lock_rows(limited) == 4
        # releasing one makes room again
        assert alice.request("UNLOCK", url, headers={"Lock-Token": f"<{tokens.pop()}>"}).status_code == 204
        assert take_lock(alice, url).status_code == 200
        # per user: 6 in all
        other = limited.url + "/other.txt"
        alice.put(other, data=b"y")
        assert take_lock(alice, other).status_code == 200
        assert take_lock(alice, other).status_code == 200
        assert take_lock(alice, other).status_code == 403
        assert lock_rows(limited) == 6
    with limited.session("bob") as bob:  # another user is not affected
        bob.put(limited.url + "/many-locks.txt", data=b"b")
        assert take_lock(bob, limited.url + "/many-locks.txt").status_code == 200


def test_lock_owner_and_body_size(limited: DavServer) -> None:
    with limited.session("bob") as bob:
        url = limited.url + "/owner.txt"
        bob.put(url, data=b"x")
        before = lock_rows(limited)
        assert take_lock(bob, url, owner="o" * 300).status_code == 400
        big = shared_lock_body("o" * 100) + " " * 3000
        response = bob.request("LOCK", url, data=big, headers={**XML, "Timeout": "Second-60"})
        assert response.status_code == 413
        assert lock_rows(limited) == before
        # PROPPATCH bodies have their own limit
        assert proppatch(bob, url, "small", "v" * 100).status_code == 207
        assert proppatch(bob, url, "large", "v" * 5000).status_code == 413
        assert dead_prop(bob, url, "large") is None
        assert dead_prop(bob, url, "small") == "v" * 100


def test_defaults_documented_in_example_config() -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "davbackup.example.yaml").read_text()
    for key in ("max_locks_per_resource: 32", "max_locks_per_user: 1000", "max_lock_owner: 4096",
                "max_lock_body: 16384", "max_proppatch_body: 262144"):
        assert key in text


# --- the in-memory index (no HTTP needed: the storage over a real repository) ------------------


def _lock(user: str, path: str, *, depth: str = "0") -> dict:
    return {"type": "write", "scope": "shared", "depth": depth, "owner": b"<o/>",
            "timeout": 3600, "principal": user}


def test_lock_index_by_resource(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "r", "a passphrase for a test") as repo:
        repo.users.add("alice", "alice-password")
        repo.users.add("alice2", "alice-password")
        storage = RepositoryLockStorage(repo, LockLimits(per_resource=2, per_user=10_000))
        storage.open()
        paths = [f"/d{i}/f{j}" for i in range(30) for j in range(30)]
        for path in paths:
            storage.create(ref_url("alice", path, is_collection=False), _lock("alice", path))
        storage.create(ref_url("alice2", "/d1/f1", is_collection=False), _lock("alice2", "/d1/f1"))
        on_file = storage.get_lock_list(ref_url("alice", "/d1/f1", is_collection=False),
                                        include_root=True, include_children=False, token_only=False)
        assert [lock["root"] for lock in on_file] == ["/alice/d1/f1"]
        below = storage.get_lock_list(ref_url("alice", "/d1", is_collection=True),
                                      include_root=False, include_children=True, token_only=False)
        assert sorted(lock["root"] for lock in below) == sorted(f"/alice/d1/f{j}" for j in range(30))
        # "/alice/d1" is not a parent of "/alice/d10/..."; other users never show up
        assert all(lock["root"].startswith("/alice/d1/") for lock in below)
        whole = storage.get_lock_list("/alice/", include_root=True, include_children=True,
                                      token_only=True)
        assert len(whole) == 900
        # a lock on someone else's resource is refused
        with pytest.raises(Exception):
            storage.create(ref_url("alice2", "/x", is_collection=False), _lock("alice", "/x"))
        # expired locks disappear from the index and the catalog
        token = whole[0]
        lock = storage.get(token)
        assert lock is not None
        lock["expire"] = time.time() - 1
        assert storage.get(token) is None
        assert token not in storage.get_lock_list("/alice/", include_root=True,
                                                  include_children=True, token_only=True)
        assert repo.locks.get(token) is None
        storage.close()
        # reloaded from the catalog: same index
        storage.open()
        assert len(storage.get_lock_list("/alice/", include_root=False, include_children=True,
                                         token_only=True)) == 899
