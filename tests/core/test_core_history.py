"""history.py, retention.py and the temporal tree: points in time, versions, restore,
retention, quotas, and the upgrade of a repository written before history existed."""

from __future__ import annotations

import shutil
import sqlite3
import tarfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from davbackup import clock
from davbackup.errors import NotFound, PermissionDenied, PreconditionFailed, StorageFull
from davbackup.fs import Namespace
from davbackup.history import format_moment, parse_moment
from davbackup.maintenance.check import check_repository
from davbackup.maintenance.gc import collect_garbage
from davbackup.repository import Repository
from davbackup.retention import DAY, RetentionPolicy, load_policy, prune, save_policy
from tests.core_fixtures import USER, count_chunks, init_repo, read_file, write_file

FIXTURES = Path(__file__).parents[1] / "fixtures"
BASE = int(time.time()) // DAY * DAY - 100 * DAY  # midnight UTC, 100 days ago


# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
CATALOG_BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def at() -> Iterator:
    """``at(seconds)`` sets this process's clock to BASE + seconds (plus a fraction)."""

    def set_to(seconds: float) -> int:
        clock.set_offset(BASE + seconds + 0.25 - time.time())
        return BASE + int(seconds)

    yield set_to
    clock.set_offset(0)


@pytest.fixture
def repo(tmp_path: Path, catalog_url: str | None) -> Iterator[Repository]:
    r = init_repo(tmp_path / "repo", small=True, catalog_url=catalog_url)
    yield r
    r.close()


@pytest.fixture
def ns(repo: Repository) -> Namespace:
    return repo.namespace(USER)


def names(entries: list) -> list[str]:
    return [e.name for e in entries]


def test_moment_names_round_trip() -> None:
    assert format_moment(0) == "1970-01-01T000000Z"
    assert parse_moment("2026-12-03T073000Z") == 1796283000
    assert format_moment(parse_moment("2026-12-03T073000Z")) == "2026-12-03T073000Z"
    for bad in ("2026-12-03T07:30:00Z", "2026-13-03T073000Z", "2026-12-03T073000", "x", "2026-02-30T000000Z"):
        with pytest.raises(Exception):
            parse_moment(bad)


def test_point_in_time_across_every_kind_of_change(ns: Namespace, at) -> None:
    t1 = at(10)
    ns.mkdir("/docs")
    write_file(ns, "/docs/a.txt", b"a one")
    write_file(ns, "/docs/b.txt", b"b one")
    ns.set_prop("/docs/a.txt", "{urn:x}color", "<c xmlns='urn:x'>blue</c>")
    etag_a1 = ns.stat("/docs/a.txt").etag
    t2 = at(20)
    write_file(ns, "/docs/a.txt", b"a two, longer")
    ns.set_prop("/docs/a.txt", "{urn:x}color", "<c xmlns='urn:x'>red</c>")
    t3 = at(30)
    ns.move("/docs/b.txt", "/docs/moved.txt", overwrite=False)
    ns.copy("/docs", "/copy", overwrite=False)
    t4 = at(40)
    ns.delete("/docs")
    t5 = at(50)
    ns.mkdir("/docs")
    write_file(ns, "/docs/a.txt", b"a again")
    at(60)
    h = ns.history()
    assert h.moments() == [t1, t2, t3, t4, t5]

    p1 = h.at(t1)
    assert names(p1.list("/")) == ["docs"]
    assert names(p1.list("/docs")) == ["a.txt", "b.txt"]
    assert p1.open_read("/docs/a.txt").read() == b"a one"
    assert p1.stat("/docs/a.txt").etag == etag_a1
    assert p1.get_props("/docs/a.txt") == {"{urn:x}color": "<c xmlns='urn:x'>blue</c>"}
    # any well-formed instant: the newest moment at or before it
    assert h.at(t1 + 5).open_read("/docs/a.txt").read() == b"a one"
    assert h.at(t2).open_read("/docs/a.txt").read() == b"a two, longer"
    assert h.at(t2).get_props("/docs/a.txt") == {"{urn:x}color": "<c xmlns='urn:x'>red</c>"}
    for point in (p1, h.at(t2), h.at(t3)):  # a listing's properties, read at once, are each member's
        members = point.child_props("/docs")
        assert members == {e.name: point.get_props(e.path) for e in point.list("/docs")}
    assert p1.child_props("/docs")["a.txt"] == {"{urn:x}color": "<c xmlns='urn:x'>blue</c>"}
    assert names(h.at(t3).list("/docs")) == ["a.txt", "moved.txt"]
    assert names(h.at(t3).list("/")) == ["copy", "docs"]
    assert names(h.at(t4).list("/")) == ["copy"]  # deleted: the trash bin is history
    assert h.at(t4).lookup("/docs/a.txt") is None
    assert h.at(t5).open_read("/docs/a.txt").read() == b"a again"
    assert names(h.at(t1 - 100).list("/")) == []  # before anything existed
    # the live tree is untouched by all this reading
    assert names(ns.list("/")) == ["copy", "docs"]


def test_changes_within_one_second_coalesce(ns: Namespace, at) -> None:
    t1 = at(10)
    write_file(ns, "/f", b"1")
    write_file(ns, "/f", b"2")
    write_file(ns, "/f", b"3")
    at(11)
    assert ns.history().at(t1).open_read("/f").read() == b"3"
    assert [v.second for v in ns.history().versions("/f")] == [t1]


def test_versions_follow_the_file_and_outlive_it(ns: Namespace, at) -> None:
    t1 = at(10)
    write_file(ns, "/report.pdf", b"v1")
    t2 = at(20)
    write_file(ns, "/report.pdf", b"v2 bigger")
    at(30)
    ns.mkdir("/archive")
    ns.move("/report.pdf", "/archive/report.pdf", overwrite=False)  # same content: no new version
    t4 = at(40)
    write_file(ns, "/archive/report.pdf", b"v3")
    at(50)
    h = ns.history()
    listed = h.versions("/archive/report.pdf")
    assert [v.name for v in listed] == [format_moment(t) + ".pdf" for t in (t1, t2, t4)]
    assert [h.open_version("/archive/report.pdf", v.name).read() for v in listed] == [b"v1", b"v2 bigger", b"v3"]
    assert [v.entry.size for v in listed] == [2, 9, 2]
    at(60)
    ns.delete("/archive/report.pdf")
    at(70)
    gone = h.versions("/archive/report.pdf")  # a deleted file keeps its versions
    assert [v.name for v in gone] == [v.name for v in listed]
    with pytest.raises(NotFound):
        h.versions("/never-existed.txt")


def test_restore_a_tree_as_a_new_version(ns: Namespace, at) -> None:
    t1 = at(10)
    ns.mkdir("/work")
    ns.mkdir("/work/sub")
    write_file(ns, "/work/a.txt", b"precious a")
    write_file(ns, "/work/sub/b.txt", b"precious b")
    ns.set_prop("/work/a.txt", "{urn:x}tag", "<t xmlns='urn:x'>1</t>")
    t2 = at(20)  # "ransomware": encrypt in place, rename, delete
    write_file(ns, "/work/a.txt", b"garbage")
    ns.move("/work/sub/b.txt", "/work/sub/b.txt.locked", overwrite=False)
    write_file(ns, "/work/new.txt", b"ransom note")
    at(30)
    history = ns.history()
    assert history.restore(t1, "/work", "/work", overwrite=True) is False
    assert names(ns.list("/work")) == ["a.txt", "sub"]
    assert names(ns.list("/work/sub")) == ["b.txt"]
    assert read_file(ns, "/work/a.txt") == b"precious a"
    assert read_file(ns, "/work/sub/b.txt") == b"precious b"
    assert ns.get_props("/work/a.txt") == {"{urn:x}tag": "<t xmlns='urn:x'>1</t>"}
    at(40)
    # the bad state stays in history, and the restore is a new version of a.txt
    assert history.at(t2).open_read("/work/a.txt").read() == b"garbage"
    assert [history.open_version("/work/a.txt", v.name).read() for v in history.versions("/work/a.txt")] == [
        b"precious a", b"garbage", b"precious a"]
    # restoring elsewhere creates; without overwrite an existing target is refused
    assert history.restore(t2, "/work/new.txt", "/note.txt", overwrite=False) is True
    assert read_file(ns, "/note.txt") == b"ransom note"
    with pytest.raises(PreconditionFailed):
        history.restore(t1, "/work/a.txt", "/note.txt", overwrite=False)
    with pytest.raises(NotFound):
        history.restore(t1 - 50, "/work", "/elsewhere", overwrite=True)
    with pytest.raises(PermissionDenied):
        history.restore(t1, "/work", "/.history/x", overwrite=True)


def test_history_names_are_reserved_at_the_root(ns: Namespace) -> None:
    for path in ("/.history", "/.versions", "/.history/x", "/.versions/y.txt"):
        with pytest.raises(PermissionDenied):
            ns.mkdir(path)
        with pytest.raises(PermissionDenied):
            ns.open_write(path)
    write_file(ns, "/f", b"x")
    with pytest.raises(PermissionDenied):
        ns.move("/f", "/.history", overwrite=True)
    with pytest.raises(PermissionDenied):
        ns.copy("/f", "/.versions", overwrite=True)
    ns.mkdir("/sub")
    ns.mkdir("/sub/.history")  # only the root's names are reserved


def test_quota_refuses_and_changes_nothing(repo: Repository, ns: Namespace, at) -> None:
    repo.users.set_quota(USER, 10_000)
    at(10)
    write_file(ns, "/a", b"x" * 6000)
    assert ns.usage() == (6000, 10_000)
    with pytest.raises(StorageFull):
        write_file(ns, "/b", b"y" * 5000)
    assert ns.lookup("/b") is None and ns.usage() == (6000, 10_000)
    with pytest.raises(StorageFull):
        ns.copy("/a", "/a-copy", overwrite=False)
    assert ns.lookup("/a-copy") is None
    write_file(ns, "/a", b"z" * 9000)  # an overwrite counts the difference
    assert ns.usage()[0] == 9000
    at(20)
    ns.delete("/a")  # history keeps it but the quota counts live files only
    assert ns.usage()[0] == 0
    write_file(ns, "/b", b"y" * 10_000)
    assert ns.room() == 0
    at(30)
    with pytest.raises(StorageFull):
        ns.history().restore(10 + BASE, "/a", "/a", overwrite=True)
    repo.users.set_quota(USER, None)
    assert ns.room() is None


def test_retention_thins_exactly_as_documented(repo: Repository, ns: Namespace, at) -> None:
    policy = RetentionPolicy(keep_all_days=30, daily_days=90, weekly_days=730)
    # Changes at 09:00 and 18:00 on each of days 0..99 (BASE is 100 days ago).
    seconds = []
    for day in range(100):
        for hour in (9, 18):
            seconds.append(at(day * DAY + hour * 3600))
            write_file(ns, "/f.txt", f"day {day} hour {hour}".encode())
    now = BASE + 100 * DAY
    at(100 * DAY)
    kept = policy.kept(seconds, now)
    for s in seconds:
        age = now - s
        if age < 30 * DAY:
            assert s in kept
    # older than 30 days: one per UTC day (the newest of the day), none dropped twice
    old = [s for s in kept if now - s >= 30 * DAY]
    days = [time.gmtime(s)[:3] for s in old]
    assert len(days) == len(set(days))
    assert all(time.gmtime(s).tm_hour == 18 for s in old)
    report = prune(repo.catalog, policy, now, dry_run=True)
    assert report.moments_dropped == len(seconds) - len(kept)
    assert ns.history().moments() == seconds  # a dry run changes nothing
    report = prune(repo.catalog, policy, now)
    assert ns.history().moments() == kept
    assert report.versions_released == report.moments_dropped  # each dropped 09:00 state had its own content
    h = ns.history()
    for s in kept:
        day, hour = divmod(s - BASE, DAY)
        assert h.at(s).open_read("/f.txt").read() == f"day {day} hour {hour // 3600}".encode()
    # the state at a thinned moment is that of the newest kept moment before it
    morning = BASE + 50 * DAY + 9 * 3600
    assert h.at(morning).open_read("/f.txt").read() == b"day 49 hour 18"
    chunks = count_chunks(repo)
    gc = collect_garbage(repo, grace_seconds=0)
    assert gc.chunks_deleted > 0 and count_chunks(repo) < chunks
    assert check_repository(repo, read_data=True).ok
    for s in kept:  # everything retained still reads back after gc
        day, hour = divmod(s - BASE, DAY)
        assert h.at(s).open_read("/f.txt").read() == f"day {day} hour {hour // 3600}".encode()


def test_policy_is_stored_in_the_catalog(repo: Repository) -> None:
    assert load_policy(repo.catalog) == RetentionPolicy(30, 90, 730)
    save_policy(repo.catalog, RetentionPolicy(7, 30, 365))
    assert load_policy(repo.catalog) == RetentionPolicy(7, 30, 365)
    with pytest.raises(Exception):
        RetentionPolicy(30, 10, 365)


def test_reading_history_does_not_grow_the_catalog(repo: Repository, ns: Namespace, at) -> None:
    at(10)
    write_file(ns, "/f", b"data")
    at(20)

    def rows() -> tuple[int, ...]:
        conn = repo.catalog.reader()
        return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("nodes", "node_history", "props_history", "moments", "versions"))

    before = rows()
    for _ in range(3):
        ns.history().at(BASE + 15).list("/")
        ns.history().versions("/f")
        ns.list("/")
    assert rows() == before


def test_repository_from_before_history_upgrades(tmp_path: Path) -> None:
    """A repository written by the previous release (schema 1, kept as a fixture)
    opens, keeps every file and property, and gains history from then on."""
    with tarfile.open(FIXTURES / "repo_schema1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "repo"
    with Repository.open(root, "fixture passphrase v1") as repo:
        conn = repo.catalog.reader()
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("4",)
        ns = repo.namespace("alice")
        assert names(ns.list("/")) == ["docs", "ünï cödé.txt"]
        assert read_file(ns, "/docs/a.txt") == b"second version of a\n"
        assert read_file(ns, "/docs/sub/b.bin") == bytes(range(256)) * 4000
        assert ns.get_props("/docs/a.txt") == {"{urn:x}color": "<color xmlns='urn:x'>blue</color>"}
        assert ns.usage() == (len(b"second version of a\n") + 256 * 4000 + len("héllo".encode()), None)
        assert repo.users.usage("bob") == (0, None)
        moments = ns.history().moments()
        assert moments, "the upgrade records when the current states began"
        assert names(ns.history().at(moments[-1]).list("/docs")) == ["a.txt", "sub"]
        assert check_repository(repo, read_data=True).ok
        write_file(ns, "/docs/a.txt", b"third")
        assert read_file(ns, "/docs/a.txt") == b"third"
    shutil.rmtree(tmp_path / "repo")


def test_user_removal_removes_their_history(repo: Repository, ns: Namespace, at) -> None:
    at(10)
    write_file(ns, "/f", b"1")
    at(20)
    write_file(ns, "/f", b"2")
    repo.users.remove(USER)
    conn: sqlite3.Connection = repo.catalog.reader()
    for table in ("node_history", "props_history", "moments"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_repository_from_the_first_history_release_upgrades(tmp_path: Path) -> None:
    """Schema 2 (history with flat chunk lists; kept as a fixture) becomes schema 3:
    chunk lists in segments, history, quotas and contents unchanged."""
    with tarfile.open(FIXTURES / "repo_schema2.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    with Repository.open(tmp_path / "repo", "fixture passphrase v2") as repo:
        conn = repo.catalog.reader()
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("4",)
        assert conn.execute("SELECT type FROM sqlite_master WHERE name='version_chunks'").fetchone() == ("view",)
        ns = repo.namespace("alice")
        assert read_file(ns, "/docs/a.txt") == b"third version of a\n"
        assert read_file(ns, "/docs/sub/b.bin") == bytes(range(256)) * 4000
        versions = ns.history().versions("/docs/a.txt")
        assert [ns.history().open_version("/docs/a.txt", v.name).read() for v in versions][-2:] == [
            b"second version of a\n", b"third version of a\n"]
        assert repo.users.usage("alice") == (len(b"third version of a\n") + 256 * 4000 + len("héllo".encode()), 10**9)
        assert check_repository(repo, read_data=True).ok
