"""davbackup/lookup_cache.py: a remembered lookup is never older than the catalog.

Every change below (through the namespace, from another thread, from another
connection to the catalog file as another process would make it) is seen by the very
next lookup of a thread that had the old answer remembered; and a remembered answer
is reused only while nothing was committed.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from davbackup.fs import Namespace
from davbackup.repository import Repository
from tests.core_fixtures import read_file, write_file


def _statements(repo: Repository) -> list[str]:
    """Every statement this thread's read connection runs from now on."""
    seen: list[str] = []
    repo.catalog.reader().set_trace_callback(seen.append)
    return seen


def test_a_lookup_is_remembered_until_a_commit(small_repo: Repository, small_ns: Namespace) -> None:
    small_ns.mkdir("/a")
    small_ns.mkdir("/a/b")
    first = write_file(small_ns, "/a/b/f.txt", b"one")
    assert small_ns.lookup("/a/b/f.txt") == first
    seen = _statements(small_repo)
    assert small_ns.lookup("/a/b/f.txt") == first
    assert seen == ["PRAGMA data_version"]  # no query of the tree
    second = write_file(small_ns, "/a/b/f.txt", b"two, longer")
    again = small_ns.lookup("/a/b/f.txt")
    assert again == second and again != first and again is not None and again.size == 11
    assert read_file(small_ns, "/a/b/f.txt") == b"two, longer"
    small_repo.catalog.reader().set_trace_callback(None)


def test_changes_of_other_threads_and_connections_are_seen(small_repo: Repository, small_ns: Namespace,
                                                           tmp_path: Path) -> None:
    write_file(small_ns, "/f.txt", b"x")
    assert small_ns.lookup("/f.txt") is not None
    assert small_ns.lookup("/g.txt") is None  # a missing path is remembered too

    moves: list[bool] = []

    def elsewhere() -> None:  # another thread: the catalog's writer connection commits
        moves.append(small_repo.namespace(small_ns.user).move("/f.txt", "/g.txt", False))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert len(moves) == 1
    assert small_ns.lookup("/f.txt") is None
    moved = small_ns.lookup("/g.txt")
    assert moved is not None and moved.name == "g.txt"

    # another connection to the catalog file, as another process (a CLI command) has
    conn = sqlite3.connect(tmp_path / "repo" / "catalog.sqlite", isolation_level=None)
    try:
        conn.execute("UPDATE nodes SET modified = 1234.5 WHERE id = ?", (moved.node_id,))
    finally:
        conn.close()
    changed = small_ns.lookup("/g.txt")
    assert changed is not None and changed.modified == 1234.5


def test_users_do_not_share_answers(small_repo: Repository, small_ns: Namespace) -> None:
    small_repo.users.add("bob", "bob-password-1")
    bob = small_repo.namespace("bob")
    write_file(small_ns, "/mine.txt", b"alice's")
    assert small_ns.lookup("/mine.txt") is not None
    assert bob.lookup("/mine.txt") is None
    assert small_ns.lookup("/mine.txt") is not None


def test_the_users_row_of_a_password_check_is_never_older_than_the_catalog(small_repo: Repository,
                                                                          tmp_path: Path) -> None:
    """UserDirectory.verify keeps the user's row like a lookup: a changed password, a
    changed role and a removed user count at the very next check, from another thread
    or another connection (a CLI command in another process)."""
    users = small_repo.users
    users.add("bob", "bob-password-1")
    assert users.verify("bob", "bob-password-1") is not None
    seen = _statements(small_repo)
    assert users.verify("bob", "bob-password-1") is not None
    assert seen == ["PRAGMA data_version"]  # no query of the users table
    small_repo.catalog.reader().set_trace_callback(None)

    done: list[bool] = []

    def elsewhere() -> None:
        users.set_password("bob", "bob-password-2")
        done.append(True)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert done and users.verify("bob", "bob-password-1") is None
    user = users.verify("bob", "bob-password-2")
    assert user is not None and user.role == "rw"

    conn = sqlite3.connect(tmp_path / "repo" / "catalog.sqlite", isolation_level=None)
    try:
        conn.execute("UPDATE users SET role = 'ro' WHERE name = 'bob'")
        changed = users.verify("bob", "bob-password-2")
        assert changed is not None and changed.role == "ro"
        conn.execute("DELETE FROM users WHERE name = 'bob'")
    finally:
        conn.close()
    assert users.verify("bob", "bob-password-2") is None
