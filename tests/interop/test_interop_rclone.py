"""rclone (webdav backend) against a real server.

The remote is configured only through environment variables (``RCLONE_CONFIG_<NAME>_*``,
the password through ``rclone obscure``) with ``RCLONE_CONFIG`` pointing at an empty
temporary file, so the user's own rclone configuration is never read or written.

Two remotes: ``plain`` (vendor ``other``: rclone compares sizes only and sets no
modification times) and ``oc`` (vendor ``owncloud``: ``X-OC-Mtime`` on PUT, so times
survive and a same-size edit is noticed).
"""

from __future__ import annotations

import json
import hashlib
import os
import random
import shutil
from pathlib import Path

import pytest

from tests.interop_fixtures import (
    assert_same_tree,
    get_bytes,
    read_tree,
    rclone_env as make_rclone_env,
    remote_tree,
    run,
    sample_tree,
    url_of,
    write_tree,
)
from tests.server_fixtures import DavServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def rclone_env(shared_dav_server: DavServer,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    url, password = shared_dav_server.url + "/", shared_dav_server.password("alice")
    return make_rclone_env(tmp_path_factory.mktemp("rclone-home"), {
        "plain": (url, "alice", password, "other"), "oc": (url, "alice", password, "owncloud")})


def rclone(env: dict[str, str], *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return run(["rclone", "--low-level-retries", "1", "--retries", "1", *args],
               env=env, check=check, timeout=150)


def lsjson(env: dict[str, str], remote: str) -> dict[str, dict[str, object]]:
    out = rclone(env, "lsjson", "-R", remote).stdout
    return {entry["Path"]: entry for entry in json.loads(out)}


def test_copy_tree_and_lsjson(rclone_env: dict[str, str], shared_dav_server: DavServer,
                              tmp_path: Path) -> None:
    files = sample_tree(seed=21)
    write_tree(tmp_path / "src", files)
    rclone(rclone_env, "copy", str(tmp_path / "src"), "plain:rc-copy/tree")
    assert_same_tree(remote_tree(shared_dav_server, "/rc-copy/tree"), files)
    listing = lsjson(rclone_env, "plain:rc-copy/tree")
    listed_files = {path: e for path, e in listing.items() if not e["IsDir"]}
    assert sorted(listed_files) == sorted(files)
    for path, entry in listed_files.items():
        assert entry["Size"] == len(files[path]), path
    assert listing["deep/a/b"]["IsDir"] is True
    # and back down with rclone: byte for byte
    rclone(rclone_env, "copy", "plain:rc-copy/tree", str(tmp_path / "down"))
    assert_same_tree(read_tree(tmp_path / "down"), files)


def test_check_by_size_and_by_content(rclone_env: dict[str, str],
                                      shared_dav_server: DavServer,
                                      tmp_path: Path) -> None:
    files = sample_tree(seed=22)
    src = tmp_path / "src"
    write_tree(src, files)
    rclone(rclone_env, "copy", str(src), "plain:rc-check")
    # no hash in common: sizes only, then with --download a byte comparison
    rclone(rclone_env, "check", str(src), "plain:rc-check")
    rclone(rclone_env, "check", "--download", str(src), "plain:rc-check")
    rclone(rclone_env, "check", "--size-only", str(src), "plain:rc-check")
    # change a file on the server behind rclone's back, same size: only --download sees it
    big = files["big.bin"]
    tampered = bytes([big[0] ^ 0xFF]) + big[1:]
    put = shared_dav_server.session().put(url_of(shared_dav_server, "/rc-check/big.bin"),
                                          data=tampered, timeout=60)
    assert put.status_code == 204
    rclone(rclone_env, "check", str(src), "plain:rc-check")
    differs = rclone(rclone_env, "check", "--download", "--differ", "-", str(src),
                     "plain:rc-check", check=False)
    assert differs.returncode != 0
    assert differs.stdout.split() == ["big.bin"]
    # a different size is seen without downloading
    shared_dav_server.session().put(url_of(shared_dav_server, "/rc-check/small.txt"),
                                    data=b"longer than before\n" * 3, timeout=60)
    sized = rclone(rclone_env, "check", "--differ", "-", str(src), "plain:rc-check",
                   check=False)
    assert sized.returncode != 0
    assert sized.stdout.split() == ["small.txt"]


def test_sync_adds_updates_and_deletes(rclone_env: dict[str, str],
                                       shared_dav_server: DavServer,
                                       tmp_path: Path) -> None:
    files = sample_tree(seed=23)
    src = tmp_path / "src"
    write_tree(src, files)
    rclone(rclone_env, "sync", str(src), "plain:rc-sync")
    assert_same_tree(remote_tree(shared_dav_server, "/rc-sync"), files)
    # change the local tree: delete a file and a directory, add, grow, shrink
    (src / "small.txt").unlink()
    shutil.rmtree(src / "deep" / "a" / "b")
    rng = random.Random(24)
    (src / "new dir ü").mkdir()
    (src / "new dir ü" / "new.bin").write_bytes(rng.randbytes(1_500_000))
    (src / "big.bin").write_bytes(rng.randbytes(5 * 1024 * 1024 + 1))
    (src / "empty.txt").write_bytes(b"no longer empty")
    rclone(rclone_env, "sync", str(src), "plain:rc-sync")
    assert_same_tree(remote_tree(shared_dav_server, "/rc-sync"), read_tree(src))
    rclone(rclone_env, "check", "--download", str(src), "plain:rc-sync")
    # a second sync has nothing to do
    again = rclone(rclone_env, "sync", "-v", str(src), "plain:rc-sync")
    assert "Copied" not in again.stderr and "Deleted" not in again.stderr, again.stderr


def test_owncloud_vendor_keeps_mtimes_and_sees_same_size_edits(
        rclone_env: dict[str, str], shared_dav_server: DavServer,
        tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = {"a.txt": b"version 1\n", "b.bin": random.Random(25).randbytes(400_000)}
    write_tree(src, files)
    stamp = 1_600_000_000  # 2020-09-13T12:26:40Z
    for name in files:
        os.utime(src / name, (stamp, stamp))
    rclone(rclone_env, "sync", str(src), "oc:rc-oc")
    listing = lsjson(rclone_env, "oc:rc-oc")
    assert listing["a.txt"]["ModTime"].startswith("2020-09-13T12:26:40"), listing["a.txt"]
    assert listing["b.bin"]["ModTime"].startswith("2020-09-13T12:26:40"), listing["b.bin"]
    head = shared_dav_server.session().head(url_of(shared_dav_server, "/rc-oc/a.txt"),
                                            timeout=30)
    assert head.headers["Last-Modified"] == "Sun, 13 Sep 2020 12:26:40 GMT"
    # an edit that keeps the size: noticed through the modification time
    (src / "a.txt").write_bytes(b"version 2\n")
    os.utime(src / "a.txt", (stamp + 60, stamp + 60))
    rclone(rclone_env, "sync", str(src), "oc:rc-oc")
    assert get_bytes(shared_dav_server, "/rc-oc/a.txt") == b"version 2\n"
    rclone(rclone_env, "check", "--download", str(src), "oc:rc-oc")


def test_owncloud_vendor_checks_sha1_hashes(
        rclone_env: dict[str, str], shared_dav_server: DavServer,
        tmp_path: Path) -> None:
    """rclone (vendor owncloud) sends OC-Checksum: SHA1 on upload; the server verifies
    it, keeps it with the version and offers it as oc:checksums, so `rclone check`
    compares hashes (same-size edits included) without downloading."""
    src = tmp_path / "src"
    files = {"x.bin": random.Random(27).randbytes(3_000_000), "y.txt": b"same size A\n"}
    write_tree(src, files)
    rclone(rclone_env, "copy", str(src), "oc:rc-sum")
    hashes = run(["rclone", "hashsum", "sha1", "oc:rc-sum"], env=rclone_env)
    listed = {line.split()[1]: line.split()[0] for line in hashes.stdout.splitlines() if line.strip()}
    assert listed == {name: hashlib.sha1(data).hexdigest() for name, data in files.items()}
    ok = rclone(rclone_env, "check", str(src), "oc:rc-sum")
    assert "hashes could not be checked" not in ok.stderr, ok.stderr
    # a same-size edit on the server by another client that sends its checksum
    edited = b"same size B\n"
    shared_dav_server.session().put(url_of(shared_dav_server, "/rc-sum/y.txt"), data=edited, timeout=30,
                                    headers={"OC-Checksum": f"SHA1:{hashlib.sha1(edited).hexdigest()}"})
    differs = rclone(rclone_env, "check", "--differ", "-", str(src), "oc:rc-sum", check=False)
    assert differs.returncode != 0
    assert differs.stdout.split() == ["y.txt"]
    # a version stored without a checksum offers none (rclone then compares sizes only)
    shared_dav_server.session().put(url_of(shared_dav_server, "/rc-sum/y.txt"), data=edited, timeout=30)
    unknown = rclone(rclone_env, "check", str(src), "oc:rc-sum", check=False)
    assert "1 hashes could not be checked" in unknown.stderr, unknown.stderr


def test_copyto_cat_ranges_and_purge(rclone_env: dict[str, str],
                                     shared_dav_server: DavServer,
                                     tmp_path: Path) -> None:
    data = random.Random(26).randbytes(6 * 1024 * 1024 + 3)
    (tmp_path / "one.bin").write_bytes(data)
    rclone(rclone_env, "copyto", str(tmp_path / "one.bin"), "plain:rc-misc/ü/one.bin")
    assert get_bytes(shared_dav_server, "/rc-misc/ü/one.bin") == data
    # rclone cat with --offset/--count reads ranges
    part = run(["rclone", "cat", "--offset", "1000000", "--count", "3000000",
                "plain:rc-misc/ü/one.bin"], env=rclone_env, text=False)
    assert part.stdout == data[1_000_000:4_000_000]
    rclone(rclone_env, "moveto", "plain:rc-misc/ü/one.bin", "plain:rc-misc/two.bin")
    assert get_bytes(shared_dav_server, "/rc-misc/two.bin") == data
    rclone(rclone_env, "purge", "plain:rc-misc")
    gone = shared_dav_server.session().get(url_of(shared_dav_server, "/rc-misc/two.bin"),
                                           timeout=30)
    assert gone.status_code == 404
