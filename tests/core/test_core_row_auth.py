"""Catalog rows are authenticated: names, property values, chunk lists, sizes and the
node -> version pointer cannot be swapped or edited in the SQLite file unnoticed."""

from __future__ import annotations

import sqlite3
import tarfile
from pathlib import Path
from typing import Iterator

import pytest

from davbackup.errors import IntegrityError
from davbackup.maintenance.check import check_repository
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, USER, init_repo, read_file, write_file

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    repo = init_repo(root, small=True)
    ns = repo.namespace(USER)
    ns.mkdir("/d")
    write_file(ns, "/d/a.txt", b"alpha " * 3000)
    write_file(ns, "/d/b.txt", b"bravo " * 5000)
    ns.set_prop("/d/a.txt", "{urn:x}p", "<p xmlns='urn:x'>secret-a</p>")
    ns.set_prop("/d/b.txt", "{urn:x}p", "<p xmlns='urn:x'>secret-b</p>")
    repo.close()
    return root


def tamper(root: Path, *statements: str) -> None:
    conn = sqlite3.connect(root / "catalog.sqlite")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.fixture
def ids(repo_dir: Path) -> dict[str, int]:
    with Repository.open(repo_dir, PASSPHRASE, mode="read") as repo:
        ns = repo.namespace(USER)
        return {p: ns.stat(p).node_id for p in ("/d/a.txt", "/d/b.txt")} | {
            "va": repo.catalog.reader().execute("SELECT version_id FROM nodes WHERE id=?",
                                                (ns.stat("/d/a.txt").node_id,)).fetchone()[0],
            "vb": repo.catalog.reader().execute("SELECT version_id FROM nodes WHERE id=?",
                                                (ns.stat("/d/b.txt").node_id,)).fetchone()[0],
        }


def opened(root: Path) -> Iterator[Repository]:
    return Repository.open(root, PASSPHRASE, mode="read")  # type: ignore[return-value]


def assert_check_names(root: Path, needle: str) -> None:
    with opened(root) as repo:
        report = check_repository(repo)
    assert not report.ok
    assert any(needle in p for p in report.problems), report.problems


def test_swapped_names_are_detected(repo_dir: Path, ids: dict[str, int]) -> None:
    a, b = ids["/d/a.txt"], ids["/d/b.txt"]
    tamper(repo_dir,
           f"UPDATE nodes SET name_enc = (SELECT name_enc FROM nodes WHERE id={b}), id = -1 WHERE id={a}",
           f"UPDATE nodes SET name_enc = (SELECT name_enc FROM nodes WHERE id=-1) WHERE id={b}",
           f"UPDATE nodes SET id={a} WHERE id=-1")
    with opened(repo_dir) as repo:
        with pytest.raises(IntegrityError, match=f"node ({a}|{b})"):
            repo.namespace(USER).list("/d")
    assert_check_names(repo_dir, "name fails verification")


def test_swapped_chunk_lists_are_detected(repo_dir: Path, ids: dict[str, int]) -> None:
    va, vb = ids["va"], ids["vb"]
    tamper(repo_dir,
           f"UPDATE version_segments SET version_id=-1 WHERE version_id={va}",
           f"UPDATE version_segments SET version_id={va} WHERE version_id={vb}",
           f"UPDATE version_segments SET version_id={vb} WHERE version_id=-1",
           f"UPDATE versions SET size=(SELECT sum(length) FROM version_chunks WHERE version_id={va}) WHERE id={va}")
    with opened(repo_dir) as repo:
        ns = repo.namespace(USER)
        with pytest.raises(IntegrityError, match="/d/a.txt"):
            ns.open_read("/d/a.txt")
        with pytest.raises(IntegrityError, match="/d/b.txt"):
            ns.open_read("/d/b.txt")
    assert_check_names(repo_dir, "does not match its ETag")


def test_node_pointed_at_another_version_is_detected(repo_dir: Path, ids: dict[str, int]) -> None:
    tamper(repo_dir, f"UPDATE nodes SET version_id={ids['vb']} WHERE id={ids['/d/a.txt']}")
    with opened(repo_dir) as repo:
        with pytest.raises(IntegrityError):
            repo.namespace(USER).open_read("/d/a.txt")
    assert_check_names(repo_dir, "name fails verification")


def test_changed_size_is_detected(repo_dir: Path, ids: dict[str, int]) -> None:
    tamper(repo_dir, f"UPDATE versions SET size = size - 6 WHERE id={ids['va']}")
    with opened(repo_dir) as repo:
        with pytest.raises(IntegrityError, match="/d/a.txt"):
            repo.namespace(USER).open_read("/d/a.txt")
    assert_check_names(repo_dir, "/d/a.txt")


def test_property_pasted_onto_another_node_is_detected(repo_dir: Path, ids: dict[str, int]) -> None:
    a, b = ids["/d/a.txt"], ids["/d/b.txt"]
    tamper(repo_dir, f"UPDATE props SET value_enc = (SELECT value_enc FROM props WHERE node_id={a}) WHERE node_id={b}")
    with opened(repo_dir) as repo:
        ns = repo.namespace(USER)
        assert ns.get_props("/d/a.txt") == {"{urn:x}p": "<p xmlns='urn:x'>secret-a</p>"}
        with pytest.raises(IntegrityError, match="/d/b.txt"):
            ns.get_props("/d/b.txt")
        with pytest.raises(IntegrityError):
            ns.child_props("/d")
    assert_check_names(repo_dir, "property {urn:x}p fails verification")


def test_untouched_repository_checks_clean_and_reads(repo_dir: Path) -> None:
    with opened(repo_dir) as repo:
        assert check_repository(repo, read_data=True).ok
        assert read_file(repo.namespace(USER), "/d/b.txt") == b"bravo " * 5000


def test_old_repository_is_readable_then_upgraded_on_first_write_open(tmp_path: Path) -> None:
    with tarfile.open(FIXTURES / "repo_schema1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "repo"
    # a read-only open of a catalog from before row authentication keeps working...
    with Repository.open(root, "fixture passphrase v1", mode="read") as repo:
        assert read_file(repo.namespace("alice"), "/docs/a.txt") == b"second version of a\n"
        ns = repo.namespace("alice")  # names sealed the old way, also in PROPFIND's listing
        assert [c[0] for c in ns.node_listing(ns.stat("/docs"), True)[1]] == [e.name for e in ns.list("/docs")]
    # ...and the first writable open seals every row again, bound to it
    with Repository.open(root, "fixture passphrase v1", mode="admin") as repo:
        conn = repo.catalog.reader()
        assert conn.execute("SELECT value FROM meta WHERE key='row_auth'").fetchone() == ("1",)
        assert check_repository(repo, read_data=True).ok
    conn = sqlite3.connect(root / "catalog.sqlite")
    docs = conn.execute("SELECT id, name_enc FROM nodes WHERE parent_id IS NOT NULL").fetchall()
    conn.execute("UPDATE nodes SET name_enc=? WHERE id=?", (docs[1][1], docs[0][0]))
    conn.commit()
    conn.close()
    with Repository.open(root, "fixture passphrase v1", mode="read") as repo:
        assert not check_repository(repo).ok  # no fallback to the old sealing after the upgrade


def test_chunk_list_swapped_while_open_is_never_served(repo_dir: Path, ids: dict[str, int]) -> None:
    """A reader uses the chunk list as it was verified when the version was first opened
    (repo.chunk_lists): rows swapped in the catalog afterwards change nothing that is
    served, and the next process to open the file detects them."""
    va, vb = ids["va"], ids["vb"]
    with opened(repo_dir) as repo:
        ns = repo.namespace(USER)
        assert read_file(ns, "/d/a.txt") == b"alpha " * 3000  # verified, kept
        tamper(repo_dir,
               f"UPDATE version_segments SET version_id=-1 WHERE version_id={va}",
               f"UPDATE version_segments SET version_id={va} WHERE version_id={vb}",
               f"UPDATE version_segments SET version_id={vb} WHERE version_id=-1")
        for _ in range(2):
            assert read_file(ns, "/d/a.txt") == b"alpha " * 3000
        with ns.open_read("/d/a.txt") as reader:
            reader.seek(6 * 2000)
            assert reader.read(12) == b"alpha alpha "
        with pytest.raises(IntegrityError, match="/d/b.txt"):
            ns.open_read("/d/b.txt")  # not opened before: verified now, and refused
    with opened(repo_dir) as repo:
        with pytest.raises(IntegrityError, match="/d/a.txt"):
            repo.namespace(USER).open_read("/d/a.txt")


def test_verified_chunk_lists_are_bounded() -> None:
    from array import array

    from davbackup.versions import ChunkList, VerifiedChunkLists

    lists = VerifiedChunkLists(max_chunks=100)
    one = ChunkList(array("q", range(0, 20 * 10, 10)), bytes(32 * 20), 200)
    assert one.row(19) == (190, 10, bytes(32))
    for vid in range(10):
        lists.put(vid, 200, f"e{vid}", one)
    assert lists.get(0, 200, "e0") is None  # the oldest went first
    assert lists.get(9, 200, "e9") is one
    assert lists.get(9, 200, "other etag") is None
    lists.put(99, 10_000, "huge", ChunkList(array("q", range(26)), bytes(32 * 26), 10_000))
    assert lists.get(99, 10_000, "huge") is None  # over a quarter of the bound: not kept
