"""fs.py and tree.py: the catalog as a file system (one user's namespace)."""

from __future__ import annotations

import random
import unicodedata

import pytest

from davbackup.errors import (
    AlreadyExists,
    Conflict,
    IncompleteBody,
    InvalidPath,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
)
from davbackup.fs import Namespace
from davbackup.repository import Repository
from tests.core_fixtures import count_chunks, count_rows, data_pack_bytes, read_file, write_file


# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
CATALOG_BACKENDS = ("sqlite", "postgresql")


def names(ns: Namespace, path: str = "/") -> list[str]:
    return [e.name for e in ns.list(path)]


def tree_of(ns: Namespace) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for e in ns.walk("/"):
        out[e.path] = None if e.is_dir else read_file(ns, e.path)
    return out


@pytest.fixture
def populated(small_ns: Namespace) -> Namespace:
    ns = small_ns
    ns.mkdir("/a")
    ns.mkdir("/a/b")
    write_file(ns, "/a/one.txt", b"one" * 3000)
    write_file(ns, "/a/b/two.bin", random.Random(2).randbytes(50_000))
    write_file(ns, "/top.txt", b"top")
    return ns


# -- folders -------------------------------------------------------------------------


def test_mkdir_and_list(small_ns: Namespace) -> None:
    entry = small_ns.mkdir("/docs")
    assert entry.is_dir and entry.path == "/docs" and entry.name == "docs"
    small_ns.mkdir("/docs/sub/")  # trailing slash tolerated
    assert names(small_ns) == ["docs"]
    assert names(small_ns, "/docs") == ["sub"]
    assert small_ns.stat("/").is_dir


def test_mkdir_errors(populated: Namespace) -> None:
    ns = populated
    with pytest.raises(AlreadyExists):
        ns.mkdir("/a")
    with pytest.raises(AlreadyExists):
        ns.mkdir("/top.txt")  # a file stands there
    with pytest.raises(Conflict):
        ns.mkdir("/missing/child")
    with pytest.raises(Conflict):
        ns.mkdir("/top.txt/child")  # parent is a file
    with pytest.raises(PermissionDenied):
        ns.mkdir("/")
    assert AlreadyExists.http_status == 405 and Conflict.http_status == 409


def test_read_errors(populated: Namespace) -> None:
    ns = populated
    with pytest.raises(NotFound):
        ns.open_read("/nope")
    with pytest.raises(Conflict):
        ns.open_read("/a")
    with pytest.raises(NotFound):
        ns.list("/nope")
    with pytest.raises(Conflict):
        ns.list("/top.txt")
    with pytest.raises(NotFound):
        ns.stat("/a/nope")
    assert ns.lookup("/top.txt/x") is None
    assert ns.lookup("/nope/x") is None


def test_write_errors(populated: Namespace) -> None:
    ns = populated
    with pytest.raises(Conflict):
        ns.open_write("/a")  # a folder stands there
    with pytest.raises(Conflict):
        ns.open_write("/missing/file")
    with pytest.raises(PermissionDenied):
        ns.open_write("/")


def test_lookup_for_write_agrees_with_lookup_and_open_write(populated: Namespace) -> None:
    """One walk gives what lookup gives and whether open_write would find a parent
    folder; open_write(looked=True) then writes without looking again."""
    ns = populated
    for path in ("/a/one.txt", "/a/b/two.bin", "/top.txt", "/a/new.txt", "/a/b", "/a", "/new",
                 "/missing/file", "/top.txt/x", "/a/one.txt/x", "/a/missing/deeper/x"):
        entry, parent_is_folder = ns.lookup_for_write(path)
        assert entry == ns.lookup(path), path
        try:
            ns.open_write(path).abort()
            opens = True
        except Conflict:
            opens = False
        assert opens == (parent_is_folder and not (entry is not None and entry.is_dir)), path
    assert ns.lookup_for_write("/") == (ns.lookup("/"), False)
    pending = ns.open_write("/a/new.txt", looked=True)
    pending.write(b"new")
    pending.commit()
    assert read_file(ns, "/a/new.txt") == b"new"
    pending = ns.open_write("/missing/file", looked=True)  # a wrong look: the commit still refuses
    pending.write(b"x")
    with pytest.raises(Conflict):
        pending.commit()
    with pytest.raises(PermissionDenied):
        ns.open_write("/", looked=True)


def test_walk_and_stat(populated: Namespace) -> None:
    ns = populated
    paths = [e.path for e in ns.walk("/")]
    assert paths == ["/a", "/a/b", "/a/b/two.bin", "/a/one.txt", "/top.txt"]
    st = ns.stat("/a/one.txt")
    assert st.size == 9000 and not st.is_dir and st.etag


# -- path validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/..", "/a/../b", "/a/..", "..", "/./a", "/a/./b", "/a\x00b", "/a\nb", "/tab\there", "/x\x7f",
     "/" + "a" * 1025, "/\udc80bad-surrogate"],
)
def test_invalid_paths(small_ns: Namespace, path: str) -> None:
    with pytest.raises(InvalidPath):
        small_ns.lookup(path)
    with pytest.raises(InvalidPath):
        small_ns.open_write(path)
    with pytest.raises(InvalidPath):
        small_ns.mkdir(path)
    assert InvalidPath.http_status == 400


def test_too_deep_path(small_ns: Namespace) -> None:
    with pytest.raises(InvalidPath):
        small_ns.lookup("/d" * 300)


UNICODE_NAMES = [
    "emoji-😀🎉👩‍👩‍👧‍👦.txt",
    "עברית-שלום.txt",  # RTL
    "مرحبا بالعالم",  # RTL, with a space
    "\u202ertl-override.txt",
    unicodedata.normalize("NFD", "café-décomposé.txt"),  # combining accents
    unicodedata.normalize("NFC", "café-décomposé.txt"),  # the same, precomposed: another name
    "e\u0301\u0301\u0301-stacked",
    "日本語のファイル名.txt",
    "x" * 255,
    "é" * 255,  # 255 characters, 510 bytes
    "😀" * 255,  # 255 characters, 1020 bytes
    " leading and trailing ",
    "semi;colon,comma#hash%percent?q&a=b",
    "back\\slash",
]


def test_unicode_names_round_trip(small_ns: Namespace) -> None:
    ns = small_ns
    ns.mkdir("/u")
    for i, name in enumerate(UNICODE_NAMES):
        write_file(ns, f"/u/{name}", name.encode("utf-8") + bytes([i]))
    listed = names(ns, "/u")
    assert sorted(listed) == sorted(UNICODE_NAMES)
    assert len(set(listed)) == len(UNICODE_NAMES)  # NFC and NFD are different names
    for i, name in enumerate(UNICODE_NAMES):
        assert read_file(ns, f"/u/{name}") == name.encode("utf-8") + bytes([i])
        assert ns.stat(f"/u/{name}").name == name
    ns.mkdir("/u/😀")
    ns.move("/u/" + UNICODE_NAMES[0], "/u/😀/" + UNICODE_NAMES[1], overwrite=False)
    assert read_file(ns, "/u/😀/" + UNICODE_NAMES[1]) == UNICODE_NAMES[0].encode() + b"\x00"


# -- overwrite, abort, incomplete bodies ---------------------------------------------


def test_overwrite_keeps_old_version_until_commit(small_repo: Repository, small_ns: Namespace) -> None:
    ns = small_ns
    old, new = b"old content" * 1000, random.Random(3).randbytes(80_000)
    write_file(ns, "/f", old)
    old_etag = ns.stat("/f").etag
    pending = ns.open_write("/f")
    pending.write(new[:50_000])
    assert read_file(ns, "/f") == old
    assert ns.stat("/f").etag == old_etag
    pending.write(new[50_000:])
    assert read_file(ns, "/f") == old
    entry = pending.commit(expected_size=len(new))
    assert entry.size == len(new) and entry.etag != old_etag
    assert read_file(ns, "/f") == new
    # the old version is no longer live: orphaned, or kept only by history
    assert count_rows(small_repo, "versions WHERE orphaned IS NULL AND id NOT IN"
                                  " (SELECT version_id FROM node_history WHERE version_id IS NOT NULL)") == 1


def test_abort_leaves_old_version(small_repo: Repository, small_ns: Namespace) -> None:
    ns = small_ns
    write_file(ns, "/f", b"keep me")
    pending = ns.open_write("/f")
    pending.write(random.Random(4).randbytes(100_000))
    pending.abort()
    pending.abort()  # idempotent
    assert read_file(ns, "/f") == b"keep me"
    with pytest.raises(ValueError):
        pending.write(b"more")
    assert count_rows(small_repo, "versions WHERE orphaned IS NULL") == 1


def test_aborted_new_file_leaves_nothing(small_ns: Namespace) -> None:
    pending = small_ns.open_write("/never")
    pending.write(b"x" * 10_000)
    pending.abort()
    assert small_ns.lookup("/never") is None


@pytest.mark.parametrize("announced", [1, 99_999, 100_001, 10**9])
def test_incomplete_body_keeps_old_version(small_repo: Repository, small_ns: Namespace, announced: int) -> None:
    ns = small_ns
    write_file(ns, "/f", b"previous")
    versions = count_rows(small_repo, "versions WHERE orphaned IS NULL")
    pending = ns.open_write("/f")
    pending.write(random.Random(5).randbytes(100_000))
    with pytest.raises(IncompleteBody):
        pending.commit(expected_size=announced)
    assert read_file(ns, "/f") == b"previous"
    assert count_rows(small_repo, "versions WHERE orphaned IS NULL") == versions
    with pytest.raises(ValueError):
        pending.commit()


def test_incomplete_body_for_new_file(small_ns: Namespace) -> None:
    pending = small_ns.open_write("/new")
    pending.write(b"abc")
    with pytest.raises(IncompleteBody):
        pending.commit(expected_size=4)
    assert small_ns.lookup("/new") is None


def test_verify_hook_can_refuse(small_ns: Namespace) -> None:
    write_file(small_ns, "/f", b"old")
    pending = small_ns.open_write("/f")
    pending.write(b"new")

    def refuse() -> None:
        raise PreconditionFailed("digest mismatch")

    with pytest.raises(PreconditionFailed):
        pending.commit(verify=refuse)
    assert read_file(small_ns, "/f") == b"old"


def test_parent_deleted_before_commit(small_repo: Repository, small_ns: Namespace) -> None:
    ns = small_ns
    ns.mkdir("/d")
    pending = ns.open_write("/d/f")
    pending.write(b"data" * 1000)
    ns.delete("/d")
    with pytest.raises(Conflict):
        pending.commit()
    assert count_rows(small_repo, "versions WHERE orphaned IS NULL") == 0


def test_folder_created_at_path_before_commit(small_ns: Namespace) -> None:
    pending = small_ns.open_write("/x")
    pending.write(b"data")
    small_ns.mkdir("/x")
    with pytest.raises(Conflict):
        pending.commit()
    assert small_ns.stat("/x").is_dir


def test_two_writers_to_one_path_last_commit_wins(small_ns: Namespace) -> None:
    p1, p2 = small_ns.open_write("/f"), small_ns.open_write("/f")
    p1.write(b"first")
    p2.write(b"second")
    p2.commit()
    p1.commit()
    assert read_file(small_ns, "/f") == b"first"
    assert names(small_ns) == ["f"]


def test_etag_depends_on_content_only(small_ns: Namespace) -> None:
    write_file(small_ns, "/a", b"same")
    write_file(small_ns, "/b", b"same")
    write_file(small_ns, "/c", b"diff")
    assert small_ns.stat("/a").etag == small_ns.stat("/b").etag != small_ns.stat("/c").etag


def test_set_modified(small_ns: Namespace) -> None:
    write_file(small_ns, "/f", b"x")
    small_ns.set_modified("/f", 1_000_000.5)
    assert small_ns.stat("/f").modified == 1_000_000.5
    with pytest.raises(NotFound):
        small_ns.set_modified("/nope", 1.0)


# -- delete --------------------------------------------------------------------------


def test_delete_subtree(small_repo: Repository, populated: Namespace) -> None:
    ns = populated
    ns.set_prop("/a/b/two.bin", "{DAV:}x", "1")
    nodes = count_rows(small_repo, "nodes")
    ns.delete("/a")
    assert names(ns) == ["top.txt"]
    assert count_rows(small_repo, "nodes") == nodes - 4
    # a deleted file's version is kept by history if it lived past a second boundary,
    # else orphaned; either way only top.txt's version is still live
    live = "orphaned IS NULL AND id NOT IN (SELECT version_id FROM node_history WHERE version_id IS NOT NULL)"
    assert count_rows(small_repo, f"versions WHERE {live}") == 1
    assert count_rows(small_repo, "props") == 0
    with pytest.raises(NotFound):
        ns.delete("/a")
    with pytest.raises(PermissionDenied):
        ns.delete("/")
    ns.delete("/top.txt")
    assert names(ns) == []
    # orphaned versions keep their chunk lists until gc (open readers finish first)
    assert count_rows(small_repo, f"version_chunks WHERE version_id IN (SELECT id FROM versions WHERE {live})") == 0


# -- move and copy -------------------------------------------------------------------


def test_move_file_and_folder(populated: Namespace) -> None:
    ns = populated
    before = tree_of(ns)
    assert ns.move("/a/one.txt", "/a/b/uno.txt", overwrite=False) is True
    assert ns.lookup("/a/one.txt") is None
    assert read_file(ns, "/a/b/uno.txt") == before["/a/one.txt"]
    assert ns.move("/a", "/z", overwrite=False) is True
    assert names(ns) == ["top.txt", "z"]
    assert read_file(ns, "/z/b/two.bin") == before["/a/b/two.bin"]


def test_move_overwrite_semantics(small_repo: Repository, populated: Namespace) -> None:
    ns = populated
    with pytest.raises(PreconditionFailed):
        ns.move("/top.txt", "/a/one.txt", overwrite=False)
    assert read_file(ns, "/top.txt") == b"top"
    assert ns.move("/top.txt", "/a/one.txt", overwrite=True) is False
    assert read_file(ns, "/a/one.txt") == b"top"
    assert ns.lookup("/top.txt") is None
    # a folder replaced by a file: the folder's subtree goes
    assert ns.move("/a/one.txt", "/a/b", overwrite=True) is False
    assert read_file(ns, "/a/b") == b"top"
    # replaced files are orphaned, or kept by history if they lived past a second
    # boundary: no version is left that neither a node nor history refers to (counting
    # "not in history" instead made the test depend on where the second boundaries fell)
    assert count_rows(small_repo, "versions WHERE orphaned IS NULL"
                                  " AND id NOT IN (SELECT version_id FROM nodes WHERE version_id IS NOT NULL)"
                                  " AND id NOT IN (SELECT version_id FROM node_history WHERE version_id IS NOT NULL)"
                      ) == 0
    live = ns.lookup("/a/b")
    assert live is not None and count_rows(small_repo, f"nodes WHERE id = {live.node_id} AND version_id IS NOT NULL") == 1


def test_move_errors(populated: Namespace) -> None:
    ns = populated
    with pytest.raises(PermissionDenied):
        ns.move("/a", "/a/b/inside", overwrite=True)  # into itself
    with pytest.raises(PermissionDenied):
        ns.move("/a", "/a", overwrite=True)
    with pytest.raises(PermissionDenied):
        ns.move("/", "/x", overwrite=False)
    with pytest.raises(NotFound):
        ns.move("/nope", "/x", overwrite=False)
    with pytest.raises(Conflict):
        ns.move("/top.txt", "/nope/x", overwrite=False)
    # a name that merely starts like the source is not "inside" it
    ns.move("/a", "/ab", overwrite=False)
    assert names(ns) == ["ab", "top.txt"]


@pytest.mark.parametrize("op", ["move", "copy"])
def test_transfer_onto_own_ancestor_loses_nothing(populated: Namespace, op: str) -> None:
    """MOVE/COPY /a/b -> /a with Overwrite: T would delete the source with the destination.

    Either refuse (PermissionDenied/Conflict, nothing changed) or end with the source's
    content at the destination; never lose both.
    """
    ns = populated
    before = tree_of(ns)
    try:
        getattr(ns, op)("/a/b", "/a", overwrite=True)
    except (PermissionDenied, Conflict):
        assert tree_of(ns) == before
        return
    after = tree_of(ns)
    assert after.get("/a/two.bin") == before["/a/b/two.bin"], after


def test_props_follow_move_and_copy(populated: Namespace) -> None:
    ns = populated
    ns.set_prop("/a/one.txt", "{urn:x}color", "blue")
    ns.set_prop("/a", "{urn:x}kind", "folder ✓")
    ns.move("/a/one.txt", "/moved.txt", overwrite=False)
    assert ns.get_props("/moved.txt") == {"{urn:x}color": "blue"}
    ns.copy("/moved.txt", "/copied.txt", overwrite=False)
    assert ns.get_props("/copied.txt") == {"{urn:x}color": "blue"}
    ns.set_prop("/copied.txt", "{urn:x}color", "red")
    assert ns.get_props("/moved.txt") == {"{urn:x}color": "blue"}
    ns.copy("/a", "/a2", overwrite=False)
    assert ns.get_props("/a2") == {"{urn:x}kind": "folder ✓"}
    ns.remove_prop("/a2", "{urn:x}kind")
    assert ns.get_props("/a2") == {}
    assert ns.get_props("/a") == {"{urn:x}kind": "folder ✓"}
    with pytest.raises(NotFound):
        ns.set_prop("/nope", "n", "v")


def test_props_are_encrypted(small_repo: Repository, small_ns: Namespace) -> None:
    write_file(small_ns, "/f", b"x")
    small_ns.set_prop("/f", "{urn:x}secret", "top-secret-value")
    (blob,) = small_repo.catalog.reader().execute("SELECT value_enc FROM props").fetchone()
    assert b"top-secret-value" not in blob


def test_copy_shares_versions(small_repo: Repository, populated: Namespace) -> None:
    ns = populated
    before = tree_of(ns)
    chunks, packs_size = count_chunks(small_repo), data_pack_bytes(small_repo)
    versions = count_rows(small_repo, "versions WHERE orphaned IS NULL")
    assert ns.copy("/a", "/copy", overwrite=False) is True
    assert count_chunks(small_repo) == chunks
    assert count_rows(small_repo, "versions WHERE orphaned IS NULL") == versions
    assert data_pack_bytes(small_repo) == packs_size
    assert read_file(ns, "/copy/b/two.bin") == before["/a/b/two.bin"]
    assert ns.stat("/copy/one.txt").etag == ns.stat("/a/one.txt").etag
    # changing or deleting one copy leaves the other intact
    write_file(ns, "/a/one.txt", b"changed")
    assert read_file(ns, "/copy/one.txt") == before["/a/one.txt"]
    ns.delete("/a")
    assert read_file(ns, "/copy/b/two.bin") == before["/a/b/two.bin"]


def test_copy_overwrite_and_depth(populated: Namespace) -> None:
    ns = populated
    with pytest.raises(PreconditionFailed):
        ns.copy("/top.txt", "/a/one.txt", overwrite=False)
    assert ns.copy("/top.txt", "/a/one.txt", overwrite=True) is False
    assert read_file(ns, "/a/one.txt") == b"top" == read_file(ns, "/top.txt")
    assert ns.copy("/a", "/shallow", overwrite=False, recursive=False) is True
    assert names(ns, "/shallow") == []
    with pytest.raises(PermissionDenied):
        ns.copy("/a", "/a/b/c", overwrite=False)


def test_read1_stops_at_chunk_boundaries_and_reassembles(small_repo: Repository) -> None:
    import os as _os

    ns = small_repo.namespace(small_repo.users.list()[0].name)
    data = _os.urandom(6 * 1024 * 1024 + 123)
    w = ns.open_write("/r1.bin")
    w.write(data)
    w.commit()
    reader = ns.open_read("/r1.bin")
    reader.seek(1000)
    pieces = []
    while True:
        piece = reader.read1(1 << 20)
        if not piece:
            break
        assert len(piece) <= 1 << 20
        pieces.append(piece)
    assert b"".join(pieces) == data[1000:]


def test_a_commit_answers_what_a_lookup_then_finds(small_ns: Namespace) -> None:
    """The entry a write returns is made from what the commit wrote (davbackup/linking.py),
    not read back: it must equal what a lookup finds afterwards, for a new file and an
    overwrite, at the root and in a folder, with and without checksum text."""
    ns = small_ns
    ns.mkdir("/f")
    ns.mkdir("/f/g")
    for path in ("/top.bin", "/f/g/deep.bin"):
        for round_, text in enumerate((None, "SHA1:" + "ab" * 20, None)):
            pending = ns.open_write(path)
            pending.write(bytes([round_]) * (1000 + round_))
            made = pending.commit(checksums=None if text is None else (lambda t=text: t))
            assert made == ns.lookup(path), (path, round_)
            assert made.checksums == text and made.size == 1000 + round_ and made.version_id is not None
        assert ns.stat(path).created <= ns.stat(path).modified


def test_a_commit_into_a_removed_folder_conflicts(small_ns: Namespace) -> None:
    """The commit walks the path again in its transaction: a folder removed while the
    body arrived makes it fail (409), and nothing is linked."""
    ns = small_ns
    ns.mkdir("/gone")
    ns.mkdir("/gone/sub")
    pending = ns.open_write("/gone/sub/late.txt")
    pending.write(b"late")
    ns.delete("/gone")
    with pytest.raises(Conflict):
        pending.commit()
    assert ns.lookup("/gone") is None and names(ns) == []
