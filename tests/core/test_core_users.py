"""users.py: user records, password verification and its cache, namespaces per user."""

from __future__ import annotations

import pytest

from davbackup.errors import AlreadyExists, NotFound, UsageError
from davbackup.repository import Repository
from tests.core_fixtures import USER, USER_PASSWORD, count_rows, read_file, write_file


# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
CATALOG_BACKENDS = ("sqlite", "postgresql")


def test_add_and_verify(repo: Repository) -> None:
    user = repo.users.add("bob", "bob-password-1", role="ro")
    assert (user.name, user.role, user.read_only) == ("bob", "ro", True)
    assert repo.users.verify("bob", "bob-password-1") == repo.users.get("bob")
    assert repo.users.verify("bob", "bob-password-2") is None
    assert repo.users.verify("bob", "") is None
    assert repo.users.verify("nobody", "bob-password-1") is None
    assert [u.name for u in repo.users.list()] == ["alice", "bob"]
    with pytest.raises(AlreadyExists):
        repo.users.add("bob", "another-password")


def test_unknown_user_is_checked_like_a_wrong_password() -> None:
    """The hash an unknown name is checked against (written out, not made at import)
    has hash_password's parameters, so it costs what a real check costs, and no
    password matches it."""
    from davbackup import users

    dummy = users._DUMMY_HASH.split("$")
    real = users.hash_password("some-password-1").split("$")
    assert (dummy[0], dummy[1]) == (real[0], real[1])
    assert [len(part) for part in dummy[2:]] == [len(part) for part in real[2:]]
    assert not users.check_password("davbackup-dummy-password", users._DUMMY_HASH)


def test_password_is_not_stored_in_clear(repo: Repository) -> None:
    (pw_hash,) = repo.catalog.reader().execute("SELECT pw_hash FROM users WHERE name=?", (USER,)).fetchone()
    assert USER_PASSWORD not in pw_hash
    assert pw_hash.startswith("argon2id$")


def test_set_password_invalidates_cache(repo: Repository) -> None:
    assert repo.users.verify(USER, USER_PASSWORD) is not None  # now cached
    assert repo.users.verify(USER, USER_PASSWORD) is not None  # served from the cache
    repo.users.set_password(USER, "a-new-password")
    assert repo.users.verify(USER, USER_PASSWORD) is None
    assert repo.users.verify(USER, "a-new-password") is not None
    with pytest.raises(NotFound):
        repo.users.set_password("nobody", "a-new-password")


def test_password_change_from_another_process_invalidates_cache(repo: Repository) -> None:
    assert repo.users.verify(USER, USER_PASSWORD) is not None
    with Repository.open(repo.root, "correct horse battery staple", mode="admin") as admin:
        admin.users.set_password(USER, "changed-elsewhere")
    assert repo.users.verify(USER, USER_PASSWORD) is None
    assert repo.users.verify(USER, "changed-elsewhere") is not None


@pytest.mark.parametrize("password", ["", "short", "1234567"])
def test_short_password_rejected(repo: Repository, password: str) -> None:
    with pytest.raises(UsageError, match="short"):
        repo.users.add("carol", password)
    with pytest.raises(UsageError):
        repo.users.set_password(USER, password)
    assert repo.users.get("carol") is None


@pytest.mark.parametrize(
    "name",
    ["", "-dash", ".dot", "a b", "a/b", "a:b", "ä", "x" * 65, "alice\n", "bob\x00", "../etc", "a\\b"],
)
def test_bad_names_rejected(repo: Repository, name: str) -> None:
    with pytest.raises(UsageError):
        repo.users.add(name, "good-password-1")
    assert all(u.name == USER for u in repo.users.list())


@pytest.mark.parametrize("name", ["b", "x" * 64, "bob.smith", "b_o-b@example.org", "0day"])
def test_good_names_accepted(repo: Repository, name: str) -> None:
    repo.users.add(name, "good-password-1")
    assert repo.users.get(name) is not None


def test_bad_role_rejected(repo: Repository) -> None:
    with pytest.raises(UsageError):
        repo.users.add("dave", "good-password-1", role="admin")
    repo.users.set_role(USER, "ro")
    assert repo.users.get(USER).role == "ro"  # type: ignore[union-attr]
    with pytest.raises(UsageError):
        repo.users.set_role(USER, "root")
    with pytest.raises(NotFound):
        repo.users.set_role("nobody", "rw")


def test_namespaces_are_isolated(repo: Repository, ns) -> None:
    repo.users.add("bob", "bob-password-1")
    bob = repo.namespace("bob")
    write_file(ns, "/same-name", b"alice's")
    write_file(bob, "/same-name", b"bob's")
    assert read_file(ns, "/same-name") == b"alice's"
    assert read_file(bob, "/same-name") == b"bob's"
    assert [e.name for e in bob.list("/")] == ["same-name"]


def test_remove_deletes_namespace(repo: Repository, ns) -> None:
    repo.users.add("bob", "bob-password-1")
    bob = repo.namespace("bob")
    bob.mkdir("/docs")
    write_file(bob, "/docs/a.txt", b"a" * 10_000)
    write_file(ns, "/kept.txt", b"alice keeps this")
    nodes_before = count_rows(repo, "nodes")
    repo.users.remove("bob")
    assert repo.users.get("bob") is None
    assert repo.users.verify("bob", "bob-password-1") is None
    assert count_rows(repo, "nodes") == nodes_before - 3  # root, /docs, /docs/a.txt
    assert count_rows(repo, "versions WHERE orphaned IS NULL") == 1  # alice's file only
    assert read_file(ns, "/kept.txt") == b"alice keeps this"
    with pytest.raises(NotFound):
        repo.users.remove("bob")
    with pytest.raises(NotFound):
        repo.users.root_id("bob")


def test_removed_then_re_added_user_gets_a_working_empty_namespace(repo: Repository, ns) -> None:
    """A cached Namespace must not outlive its user: re-adding the name starts fresh."""
    repo.users.add("bob", "bob-password-1")
    write_file(repo.namespace("bob"), "/old.txt", b"old")
    write_file(ns, "/spacer", b"x")  # so that bob's node IDs are not reused below
    repo.users.remove("bob")
    repo.users.add("bob", "bob-password-2")
    bob = repo.namespace("bob")
    assert bob.list("/") == []
    write_file(bob, "/new.txt", b"new")
    assert read_file(bob, "/new.txt") == b"new"


def test_user_removed_by_admin_process_cannot_see_anothers_files(repo: Repository, ns) -> None:
    """The server caches Namespace objects; `davbackup user remove/add` runs in another process.

    After bob is removed, SQLite reuses his root's node ID for alice's next folder; when
    bob is added again, the server's cached namespace must not resolve to that folder.
    """
    repo.users.add("bob", "bob-password-1")
    write_file(repo.namespace("bob"), "/bobs.txt", b"bob's file")  # the server caches bob's namespace
    with Repository.open(repo.root, "correct horse battery staple", mode="admin") as admin:
        admin.users.remove("bob")
    ns.mkdir("/private")
    write_file(ns, "/private/diary.txt", b"alice's secrets")
    with Repository.open(repo.root, "correct horse battery staple", mode="admin") as admin:
        admin.users.add("bob", "bob-password-2")
    assert repo.users.verify("bob", "bob-password-2") is not None
    bob = repo.namespace("bob")
    assert [e.name for e in bob.list("/")] == []
    assert bob.lookup("/diary.txt") is None
