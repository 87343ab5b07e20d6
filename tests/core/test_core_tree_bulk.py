"""Large COPY and DELETE in bounded transactions (davbackup/tree_bulk.py, DESIGN.md §19).

The thresholds are lowered (a "large" tree has more than 20 nodes, batches of 7) so
that small trees go through every step: staging, linking, the trash, the batches.
The reference for correctness is the same sequence of changes done the old way, in
one transaction each: what users can see — the live tree, every point in time in
history, every file's versions, the quota — must be identical.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from davbackup import clock, tree_bulk
from davbackup.errors import Conflict, InvalidPath, NotFound, RepositoryError, StorageFull
from davbackup.faults import ENV
from davbackup.fs import Namespace
from davbackup.maintenance.check import check_repository
from davbackup.maintenance.gc import collect_garbage
from davbackup.repository import Repository
from davbackup.tree import MAX_DEPTH, TRASH

BASE = 1_796_000_000.0


class FakeClock:
    """A clock the test moves: every change of one step is stamped with the same time."""

    def __init__(self) -> None:
        self.t = BASE

    def __call__(self) -> float:
        return self.t

    def step(self, seconds: float = 2.0) -> None:
        self.t += seconds


@pytest.fixture()
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(clock, "now", fake)
    return fake


@pytest.fixture()
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree_bulk, "SMALL", 20)
    monkeypatch.setattr(tree_bulk, "BATCH", 7)


# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
CATALOG_BACKENDS = ("sqlite", "postgresql")
_new_catalog: Any = None  # a fresh PostgreSQL database per repository, or None (SQLite)


@pytest.fixture(autouse=True)
def _on_each_catalog(request: pytest.FixtureRequest, catalog_url: str | None) -> None:
    global _new_catalog
    if catalog_url is None:
        _new_catalog = None
    else:
        server = request.getfixturevalue("postgres_server")
        _new_catalog = lambda: server.url(server.create_database())  # noqa: E731


def new_repo(path: Path, quota: int | None = None) -> Repository:
    repo = Repository.init(path, "pass", catalog_url=_new_catalog() if _new_catalog else None)
    repo.users.add("alice", "password1")
    repo.users.add("bob", "password2")
    if quota is not None:
        repo.users.set_quota("alice", quota)
    return repo


def put(ns: Namespace, path: str, data: bytes) -> None:
    w = ns.open_write(path)
    w.write(data)
    w.commit()


def build(ns: Namespace, top: str = "/src", folders: int = 4, files: int = 5) -> None:
    """A tree of 1 + folders * (2 + files) + 1 nodes, with properties and two levels."""
    ns.mkdir(top)
    for i in range(folders):
        ns.mkdir(f"{top}/d{i}")
        ns.mkdir(f"{top}/d{i}/inner")
        ns.set_prop(f"{top}/d{i}", "{urn:t}tag", f"<v>{i}</v>")
        for j in range(files):
            put(ns, f"{top}/d{i}/f{j}.txt", f"content {top} {i} {j}\n".encode() * (i + j + 1))
        put(ns, f"{top}/d{i}/inner/deep.bin", bytes([i]) * 100)
        ns.set_prop(f"{top}/d{i}/f0.txt", "{urn:t}note", f"<n>{i}</n>")
    put(ns, f"{top}/top.txt", b"top")


def listing(view: Any, path: str = "/") -> list[tuple]:
    """Everything a client sees below ``path`` of a live tree or a point in time."""
    rows = []
    for entry in view.list(path):
        props = tuple(sorted(view.get_props(entry.path).items()))
        content = b"" if entry.is_dir else view.open_read(entry.path).read()  # ETags are keyed per repository
        rows.append((entry.path, entry.is_dir, entry.size, content, props))
        if entry.is_dir:
            rows += listing(view, entry.path)
    return rows


def views(repo: Repository, user: str = "alice") -> dict[str, Any]:
    ns = repo.namespace(user)
    history = ns.history()
    seen_files: set[str] = set()
    moments = {}
    for second in history.moments():
        rows = listing(history.at(second))
        moments[second] = rows
        seen_files.update(r[0] for r in rows if not r[1])
    versions: dict[str, Any] = {}
    for path in sorted(seen_files):
        try:
            versions[path] = [(v.name, v.entry.size, history.open_version(path, v.name).read())
                              for v in history.versions(path)]
        except NotFound:  # the path's folder is now another node, without this file
            versions[path] = None
    return {"live": listing(ns), "moments": moments, "versions": versions, "usage": ns.usage()}


def detached(repo: Repository) -> int:
    return repo.catalog.reader().execute("SELECT count(*) FROM nodes WHERE parent_id >= ?", (TRASH,)).fetchone()[0]


def scenario(repo: Repository, fake: FakeClock) -> None:
    ns = repo.namespace("alice")
    build(ns)
    build(ns, "/other", folders=3, files=4)
    fake.step()
    assert ns.copy("/src", "/dst", overwrite=False) is True
    fake.step()
    put(ns, "/src/d1/f1.txt", b"changed after the copy")
    ns.delete("/src/d2/f3.txt")
    fake.step()
    assert ns.copy("/src", "/dst", overwrite=True) is False  # a large tree replaces a large tree
    fake.step()
    assert ns.move("/other", "/dst", overwrite=True) is False  # a move onto a large tree
    fake.step()
    ns.delete("/src")
    fake.step()
    ns.delete("/dst/d0")  # small: one transaction, as before


def test_large_copy_move_delete_look_exactly_like_one_transaction(tmp_path: Path, fake_clock: FakeClock,
                                                                   monkeypatch: pytest.MonkeyPatch):
    reference = new_repo(tmp_path / "reference")
    try:
        scenario(reference, fake_clock)
        expected = views(reference)
    finally:
        reference.close()
    monkeypatch.setattr(tree_bulk, "SMALL", 20)
    monkeypatch.setattr(tree_bulk, "BATCH", 7)
    fake_clock.t = BASE
    batched = new_repo(tmp_path / "batched")
    calls: list[int] = []
    original = tree_bulk._reclaim

    def counting(conn: sqlite3.Connection, top: int, part: list[int]) -> int:
        calls.append(len(part))
        return original(conn, top, part)

    monkeypatch.setattr(tree_bulk, "_reclaim", counting)
    try:
        scenario(batched, fake_clock)
        got = views(batched)
        assert len(calls) > 6 and max(calls) <= 7  # the deletions really went in batches
        assert detached(batched) == 0
        report = check_repository(batched)
        assert report.problems == [] and report.warnings == []
    finally:
        batched.close()
    assert got["live"] == expected["live"]
    assert got["usage"] == expected["usage"]
    assert got["versions"] == expected["versions"]
    assert list(got["moments"]) == list(expected["moments"])
    for second, rows in expected["moments"].items():
        assert got["moments"][second] == rows, second
    # the point in time before the large delete of /src (the last two steps delete) shows all of it
    before_delete = list(got["moments"].values())[-3]
    assert len([r for r in before_delete if r[0].startswith("/src/")]) == 4 * 8 + 1 - 1  # d2/f3.txt went before


def test_staged_states_begin_at_the_link(tmp_path: Path, small_batches: None):
    repo = new_repo(tmp_path / "r")
    try:
        ns = repo.namespace("alice")
        build(ns)
        ns.copy("/src", "/dst", overwrite=False)
        conn = repo.catalog.reader()
        top = ns.lookup("/dst")
        assert top is not None
        ids = repo.tree.subtree_ids(conn, top.node_id)
        borns = {r[0] for r in conn.execute(
            f"SELECT born FROM nodes WHERE id IN ({','.join('?' * len(ids))})", ids)}
        assert len(ids) == len(list(ns.walk("/src"))) + 1 and len(borns) == 1
        versions = ns.history().versions("/dst/d1/f2.txt")
        assert len(versions) == 1 and versions[0].second == int(borns.pop())
    finally:
        repo.close()


def _in_other_thread(fn: Any) -> Any:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(30)
    return out[0]


def test_a_copy_is_invisible_until_linked_and_shows_the_source_when_it_began(
        tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch):
    repo = new_repo(tmp_path / "r")
    try:
        ns = repo.namespace("alice")
        build(ns)
        before = listing(ns, "/src")
        seen: list[object] = []
        original = tree_bulk.CopyStager._flush

        def flush(self: tree_bulk.CopyStager, snap: sqlite3.Connection, pending: list, staged: Any) -> Any:
            result = original(self, snap, pending, staged)
            # between two batches, in other requests: nothing of the copy shows, and
            # other writes (this user's and another user's) go ahead
            seen.append(_in_other_thread(lambda: repo.namespace("alice").lookup("/dst")))
            seen.append(_in_other_thread(lambda: [e.name for e in repo.namespace("alice").list("/")]))
            n = len(seen)
            _in_other_thread(lambda: put(repo.namespace("bob"), f"/bob-{n}.txt", b"x"))
            _in_other_thread(lambda: put(repo.namespace("alice"), f"/src/d0/new-{n}.txt", b"later"))
            _in_other_thread(lambda: delete_if_there(f"/src/d1/f{n % 5}.txt"))
            return result

        def delete_if_there(path: str) -> None:
            alice = repo.namespace("alice")
            if alice.lookup(path) is not None:
                alice.delete(path)

        monkeypatch.setattr(tree_bulk.CopyStager, "_flush", flush)
        ns.copy("/src", "/dst", overwrite=False)
        assert len(seen) >= 6
        assert all(s is None for s in seen[0::2])
        assert all(names == ["other", "src"] or "dst" not in names for names in seen[1::2])
        after = listing(ns, "/dst")
        assert [(p.replace("/dst", "/src", 1), *rest) for p, *rest in after] == before
        assert len(repo.namespace("bob").list("/")) == len(seen) // 2
    finally:
        repo.close()


def test_a_copy_that_fails_leaves_nothing(tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch):
    repo = new_repo(tmp_path / "r", quota=None)
    try:
        ns = repo.namespace("alice")
        build(ns)
        nodes = repo.catalog.reader().execute("SELECT count(*) FROM nodes").fetchone()[0]
        used = ns.usage()[0]

        def unchanged() -> None:
            conn = repo.catalog.reader()
            assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == nodes
            assert ns.usage()[0] == used and ns.lookup("/dst") is None and detached(repo) == 0

        repo.users.set_quota("alice", used + 100)  # room for 100 more bytes, not for a copy
        with pytest.raises(StorageFull):
            ns.copy("/src", "/dst", overwrite=False)
        unchanged()
        repo.users.set_quota("alice", None)

        deep = "/" + "/".join(f"l{i}" for i in range(MAX_DEPTH - 2))
        parts = deep.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            ns.mkdir("/" + "/".join(parts[:i]))
        nodes = repo.catalog.reader().execute("SELECT count(*) FROM nodes").fetchone()[0]
        with pytest.raises(InvalidPath):
            ns.copy("/src", deep + "/dst", overwrite=False)
        unchanged()

        original = tree_bulk.CopyStager._flush
        calls = []

        def flush_then_remove_parent(self: Any, snap: Any, pending: Any, staged: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                _in_other_thread(lambda: repo.namespace("alice").delete("/target"))
            return original(self, snap, pending, staged)

        ns.mkdir("/target")
        nodes = repo.catalog.reader().execute("SELECT count(*) FROM nodes").fetchone()[0] - 1
        monkeypatch.setattr(tree_bulk.CopyStager, "_flush", flush_then_remove_parent)
        with pytest.raises(Conflict):
            ns.copy("/src", "/target/dst", overwrite=False)
        unchanged()
    finally:
        repo.close()


class FailingCommits:
    """Catalog fault hook: the Nth commit from now on fails as a full disk would."""

    def __init__(self, after: int, times: int = 1) -> None:
        self.left_before, self.times = after, times

    def __call__(self) -> None:
        if self.left_before > 0:
            self.left_before -= 1
            return
        if self.times > 0:
            self.times -= 1
            raise sqlite3.OperationalError("database or disk is full")


def test_a_delete_cut_off_is_finished_by_the_next_writer_and_history_stays_whole(
        tmp_path: Path, small_batches: None, fake_clock: FakeClock):
    repo = new_repo(tmp_path / "r")
    ns = repo.namespace("alice")
    build(ns)
    fake_clock.step()
    whole = listing(ns, "/src")
    moment = int(fake_clock.t) - 1
    fake_clock.step()
    repo.catalog.fault_hook = FailingCommits(after=3, times=100)  # the unlink and two batches commit
    with pytest.raises(RepositoryError):
        ns.delete("/src")
    repo.catalog.fault_hook = None
    # the tree is gone at once, and the past still shows all of it, mid-way
    assert ns.lookup("/src") is None
    assert listing(ns.history().at(moment), "/src") == whole
    assert detached(repo) == 1
    check = check_repository(repo)
    assert check.problems == [] and len(check.warnings) == 1
    repo.close()
    fake_clock.step()
    repo = Repository.open(tmp_path / "r", "pass")  # the server's next start
    try:
        ns = repo.namespace("alice")
        assert detached(repo) == 0
        assert listing(ns.history().at(moment), "/src") == whole
        assert ns.usage()[0] == 0
        assert check_repository(repo).problems == []
    finally:
        repo.close()


def test_a_copy_cut_off_is_dropped_by_gc_or_the_next_writer(tmp_path: Path, small_batches: None):
    repo = new_repo(tmp_path / "r")
    ns = repo.namespace("alice")
    build(ns)
    used = ns.usage()[0]
    repo.catalog.fault_hook = FailingCommits(after=2, times=10**6)  # staging stops; so does its cleanup
    with pytest.raises(RepositoryError):
        ns.copy("/src", "/dst", overwrite=False)
    repo.catalog.fault_hook = None
    assert ns.lookup("/dst") is None and detached(repo) == 1
    repo.close()
    admin = Repository.open(tmp_path / "r", "pass", mode="admin")
    try:
        report = collect_garbage(admin, grace_seconds=0)
        assert report.staging_dropped == 1 and detached(admin) == 0
        assert admin.namespace("alice").usage()[0] == used
        assert check_repository(admin).problems == []
        assert admin.catalog.reader().execute(
            "SELECT count(*) FROM node_history WHERE owner=?", (admin.namespace("alice").root_id,)
        ).fetchone()[0] == 0  # a staged copy was never visible: nothing of it in history
    finally:
        admin.close()


def test_gc_leaves_a_young_staging_tree_alone(tmp_path: Path, small_batches: None):
    repo = new_repo(tmp_path / "r")
    try:
        ns = repo.namespace("alice")
        build(ns)
        repo.catalog.fault_hook = FailingCommits(after=2, times=10**6)
        with pytest.raises(RepositoryError):
            ns.copy("/src", "/dst", overwrite=False)
        repo.catalog.fault_hook = None
        assert collect_garbage(repo, grace_seconds=3600).staging_dropped == 0  # a server may be building it
        assert detached(repo) == 1
    finally:
        repo.close()


def test_removing_a_user_removes_her_detached_trees(tmp_path: Path, small_batches: None):
    repo = new_repo(tmp_path / "r")
    try:
        ns = repo.namespace("alice")
        build(ns)
        repo.catalog.fault_hook = FailingCommits(after=1, times=10**6)
        with pytest.raises(RepositoryError):
            ns.delete("/src")
        repo.catalog.fault_hook = None
        assert detached(repo) == 1
        repo.users.remove("alice")
        conn = repo.catalog.reader()
        assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 1  # bob's root
        assert check_repository(repo).problems == []
    finally:
        repo.close()


def test_quota_counts_a_replaced_large_tree_as_gone(tmp_path: Path, small_batches: None):
    """Overwriting a large tree with a copy of similar size fits a quota that holds one of them."""
    repo = new_repo(tmp_path / "r")
    try:
        ns = repo.namespace("alice")
        build(ns)
        ns.copy("/src", "/dst", overwrite=False)
        used = ns.usage()[0]
        put(ns, "/src/top.txt", b"top, a little longer")
        repo.users.set_quota("alice", used + 50)
        ns.copy("/src", "/dst", overwrite=True)
        assert ns.usage()[0] == used + 2 * (len(b"top, a little longer") - 3)
        assert listing(ns, "/dst") == [(p.replace("/src", "/dst", 1), *r) for p, *r in listing(ns, "/src")]
        with pytest.raises(StorageFull):
            ns.copy("/src", "/third", overwrite=False)
    finally:
        repo.close()


def test_linking_refuses_a_staging_tree_gc_removed(tmp_path: Path, small_batches: None):
    repo = new_repo(tmp_path / "r")
    try:
        ns = repo.namespace("alice")
        build(ns)
        stager = tree_bulk.CopyStager(repo.catalog, repo.tree, ns.root_id)
        with repo.catalog.snapshot() as snap:
            node = repo.tree.resolve(snap, ns.root_id, ["src"])
            assert node is not None
            staged = stager.stage(snap, node, None)
        tree_bulk.finish_leftovers(repo.catalog)  # as gc would after its grace period
        with pytest.raises(Conflict):
            repo.catalog.write(lambda conn: tree_bulk.link(conn, repo.tree, staged, ns.root_id, "dst", clock.now()))
        assert detached(repo) == 0
    finally:
        repo.close()


def test_detached_trees_of_one_owner_never_collide_by_name(tmp_path: Path, small_batches: None):
    """Two large deletions or copies of one user under the same name at once (here: one
    left unfinished by a failing commit, then another) each get a detached top."""
    repo = new_repo(tmp_path / "r")
    try:
        ns = repo.namespace("alice")
        ns.mkdir("/x")
        ns.mkdir("/y")
        build(ns, "/x/same")
        build(ns, "/y/same")
        repo.catalog.fault_hook = FailingCommits(after=2, times=1)  # the first delete stops half-way
        with pytest.raises(RepositoryError):
            ns.delete("/x/same")
        assert detached(repo) == 1
        ns.delete("/y/same")
        assert ns.lookup("/y/same") is None and detached(repo) == 1
        build(ns, "/y/same")
        repo.catalog.fault_hook = FailingCommits(after=2, times=10**6)  # a copy stops half-way, uncleaned
        with pytest.raises(RepositoryError):
            ns.copy("/y/same", "/x/copy", overwrite=False)
        repo.catalog.fault_hook = None
        assert detached(repo) == 2
        assert ns.copy("/y/same", "/y/copy", overwrite=False) is True
        assert len(listing(ns, "/y/copy")) == len(listing(ns, "/y/same"))
    finally:
        repo.close()
    repo = Repository.open(tmp_path / "r", "pass")
    try:
        assert detached(repo) == 0
        assert check_repository(repo).problems == []
    finally:
        repo.close()


def test_leftovers_that_cannot_be_finished_do_not_stop_a_start_or_gc(
        tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """On a full disk the server must still start and gc must go on: an unfinished
    large DELETE stays invisible and is finished later."""
    repo = new_repo(tmp_path / "r")
    ns = repo.namespace("alice")
    build(ns)
    repo.catalog.fault_hook = FailingCommits(after=2, times=1)
    with pytest.raises(RepositoryError):
        ns.delete("/src")
    repo.catalog.fault_hook = FailingCommits(after=0, times=10**6)  # a full disk at the next start
    try:
        found = tree_bulk.finish_leftovers(repo.catalog, best_effort=True)  # what Repository() runs
        assert found.trash_emptied == 0 and "could not be finished now" in caplog.text
        with pytest.raises(RepositoryError):
            tree_bulk.finish_leftovers(repo.catalog)
    finally:
        repo.catalog.fault_hook = None
    assert detached(repo) == 1 and ns.lookup("/src") is None
    repo.close()
    rules = tmp_path / "faults.json"
    rules.write_text('[{"op": "commit", "error": "ENOSPC"}]')
    monkeypatch.setenv(ENV, str(rules))
    admin = Repository.open(tmp_path / "r", "pass", mode="admin")
    caplog.clear()
    try:
        with pytest.raises(StorageFull):  # gc goes on to its own writes, which fail the same way
            collect_garbage(admin, grace_seconds=0)
        assert "could not be finished now" in caplog.text  # ... after logging the leftover and going on
    finally:
        admin.close()
    monkeypatch.delenv(ENV)
    admin = Repository.open(tmp_path / "r", "pass", mode="admin")
    try:
        assert collect_garbage(admin, grace_seconds=0).trash_emptied == 1
        assert detached(admin) == 0 and admin.namespace("alice").usage()[0] == 0
    finally:
        admin.close()
