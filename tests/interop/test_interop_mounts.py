"""The server mounted as a file system: davfs2 and rclone mount (FUSE).

A tree is copied in through the mount, read back through the mount and with plain
HTTP GET, and compared byte for byte; then edited (overwrite, rename, delete) through
the mount and checked again over HTTP.

davfs2 needs ``buf_size 64`` on recent kernels and uploads a file some
seconds after close; unmounting flushes, so HTTP checks come after ``umount``. To read
back from the server rather than from davfs2's cache, the second mount uses a fresh
cache directory. davfs2 runs its daemon as the ``davfs2`` user, so its cache lives in
a world-writable directory below /tmp (pytest's own temp dirs are 0700).

rclone mount runs with ``--vfs-cache-mode off``: a write is one streamed PUT that has
finished when ``close()`` returns, so nothing is lost by unmounting at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.interop_fixtures import (
    davfs2_mount,
    assert_same_tree,
    get_bytes,
    read_tree,
    remote_tree,
    require_tool,
    run,
    sample_tree,
    url_of,
    write_tree,
)
from tests.server_fixtures import DavServer

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"),
                       reason="/dev/fuse is missing: FUSE mounts are impossible here"),
]


def _wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


# --- davfs2 ------------------------------------------------------------------------


@pytest.mark.parametrize("use_locks", [True, False], ids=["locks", "no-locks"])
def test_davfs2_tree_round_trip(shared_dav_server: DavServer,
                                public_tmp: Path, tmp_path: Path, use_locks: bool) -> None:
    files = sample_tree(seed=31 + use_locks)
    src = tmp_path / "src"
    write_tree(src, files)
    top = f"davfs-{'locks' if use_locks else 'nolocks'}"
    with davfs2_mount(shared_dav_server, public_tmp, "one", use_locks=use_locks) as mnt:
        shutil.copytree(src, mnt / top / "tree", copy_function=shutil.copyfile)
        assert_same_tree(read_tree(mnt / top / "tree"), files)
    # after umount everything has been uploaded
    assert_same_tree(remote_tree(shared_dav_server, f"/{top}/tree"), files)

    # a fresh cache: reads come from the server; then edit through the mount
    replacement = os.urandom(2 * 1024 * 1024 + 11)
    with davfs2_mount(shared_dav_server, public_tmp, "two", use_locks=use_locks) as mnt:
        tree = mnt / top / "tree"
        assert_same_tree(read_tree(tree), files)
        (tree / "big.bin").write_bytes(replacement)
        (tree / "small.txt").rename(tree / "renamed ü.txt")
        (tree / "deep" / "a" / "sibling.bin").unlink()
        shutil.rmtree(tree / "deep" / "a" / "b")
        (tree / "new dir").mkdir()
        (tree / "new dir" / "new.txt").write_bytes(b"created through davfs2\n")
        with open(tree / "ünïcødé dir" / "emoji 🎉.bin", "r+b") as patched:
            patched.seek(50_000)
            patched.write(b"PATCHED IN PLACE")
    expected = dict(files)
    emoji = bytearray(expected["ünïcødé dir/emoji 🎉.bin"])
    emoji[50_000:50_016] = b"PATCHED IN PLACE"
    expected["ünïcødé dir/emoji 🎉.bin"] = bytes(emoji)
    expected["big.bin"] = replacement
    expected["renamed ü.txt"] = expected.pop("small.txt")
    del expected["deep/a/sibling.bin"]
    del expected["deep/a/b/c/leaf.txt"]
    expected["new dir/new.txt"] = b"created through davfs2\n"
    assert_same_tree(remote_tree(shared_dav_server, f"/{top}/tree"), expected)


def test_davfs2_sees_files_uploaded_over_http(shared_dav_server: DavServer,
                                              public_tmp: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    session = shared_dav_server.session()
    assert session.request("MKCOL", url_of(shared_dav_server, "/davfs-http/"),
                           timeout=30).status_code == 201
    assert session.put(url_of(shared_dav_server, "/davfs-http/ü 日本.bin"), data=payload,
                       timeout=60).status_code == 201
    with davfs2_mount(shared_dav_server, public_tmp, "http") as mnt:
        assert sorted(os.listdir(mnt / "davfs-http")) == ["ü 日本.bin"]
        assert (mnt / "davfs-http" / "ü 日本.bin").stat().st_size == len(payload)
        assert (mnt / "davfs-http" / "ü 日本.bin").read_bytes() == payload


# --- rclone mount ------------------------------------------------------------------


@contextmanager
def rclone_mount(server: DavServer, workdir: Path, cache_mode: str = "off") -> Iterator[Path]:
    require_tool("rclone")
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    if fusermount is None:
        pytest.fail("fusermount3 is not installed: run scripts/test (package fuse3)")
    config = workdir / "rclone.conf"
    config.write_text("")
    env = {**os.environ, "HOME": str(workdir), "RCLONE_CONFIG": str(config)}
    obscured = run(["rclone", "obscure", server.password("alice")], env=env).stdout.strip()
    env.update({
        "RCLONE_CONFIG_DB_TYPE": "webdav",
        "RCLONE_CONFIG_DB_URL": server.url + "/",
        "RCLONE_CONFIG_DB_VENDOR": "other",
        "RCLONE_CONFIG_DB_USER": "alice",
        "RCLONE_CONFIG_DB_PASS": obscured,
    })
    mountpoint = workdir / "rclone-mnt"
    mountpoint.mkdir()
    log = workdir / "rclone-mount.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            ["rclone", "mount", "db:", str(mountpoint), "--vfs-cache-mode", cache_mode,
             "--vfs-write-back", "1s", "--cache-dir", str(workdir / "rclone-cache"),
             "--dir-cache-time", "1s", "--low-level-retries", "1"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_until(lambda: os.path.ismount(mountpoint) or proc.poll() is not None, 30,
                    "rclone mount")
        assert proc.poll() is None, log.read_text()
        yield mountpoint
    finally:
        subprocess.run([fusermount, "-u", str(mountpoint)], capture_output=True, timeout=60)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            subprocess.run([fusermount, "-uz", str(mountpoint)], capture_output=True,
                           timeout=60)


def test_rclone_mount_tree_round_trip(shared_dav_server: DavServer,
                                      tmp_path: Path) -> None:
    files = sample_tree(seed=41)
    src = tmp_path / "src"
    write_tree(src, files)
    replacement = os.urandom(1024 * 1024 + 5)
    with rclone_mount(shared_dav_server, tmp_path) as mnt:
        (mnt / "rcmount").mkdir()
        shutil.copytree(src, mnt / "rcmount" / "tree", copy_function=shutil.copyfile)
        assert_same_tree(read_tree(mnt / "rcmount" / "tree"), files)
        # with --vfs-cache-mode off, close() returned after the PUT: already on the server
        assert_same_tree(remote_tree(shared_dav_server, "/rcmount/tree"), files)
        tree = mnt / "rcmount" / "tree"
        (tree / "big.bin").unlink()
        (tree / "big.bin").write_bytes(replacement)
        (tree / "small.txt").rename(tree / "renamed ü.txt")
        shutil.rmtree(tree / "deep")
        assert get_bytes(shared_dav_server, "/rcmount/tree/big.bin") == replacement
    expected = {rel: data for rel, data in files.items() if not rel.startswith("deep/")}
    expected["big.bin"] = replacement
    expected["renamed ü.txt"] = expected.pop("small.txt")
    assert_same_tree(remote_tree(shared_dav_server, "/rcmount/tree"), expected)
    # a fresh mount reads everything back from the server
    again = tmp_path / "again"
    again.mkdir()
    with rclone_mount(shared_dav_server, again) as mnt:
        assert_same_tree(read_tree(mnt / "rcmount" / "tree"), expected)


def test_rclone_mount_writes_cache_in_place_edits(shared_dav_server: DavServer,
                                                  tmp_path: Path) -> None:
    """``--vfs-cache-mode writes`` allows random-access writes; the upload happens after
    close (write-back), so the test waits until the server has the final bytes before
    it unmounts (unmounting at once loses them)."""
    original = os.urandom(3 * 1024 * 1024 + 7)
    session = shared_dav_server.session()
    assert session.request("MKCOL", url_of(shared_dav_server, "/rcwrites/"),
                           timeout=30).status_code == 201
    assert session.put(url_of(shared_dav_server, "/rcwrites/f ü.bin"), data=original,
                       timeout=60).status_code == 201
    expected = bytearray(original)
    expected[2_000_000:2_000_010] = b"0123456789"
    expected += b"appended tail"
    with rclone_mount(shared_dav_server, tmp_path, cache_mode="writes") as mnt:
        target = mnt / "rcwrites" / "f ü.bin"
        with open(target, "r+b") as handle:
            handle.seek(2_000_000)
            handle.write(b"0123456789")
        with open(target, "ab") as handle:
            handle.write(b"appended tail")
        (mnt / "rcwrites" / "new.txt").write_bytes(b"new through the cache\n")
        assert target.read_bytes() == bytes(expected)

        def uploaded() -> bool:
            got = session.get(url_of(shared_dav_server, "/rcwrites/f ü.bin"), timeout=60)
            new = session.get(url_of(shared_dav_server, "/rcwrites/new.txt"), timeout=60)
            return got.content == bytes(expected) and new.status_code == 200
        _wait_until(uploaded, 60, "rclone's write-back upload")
    assert remote_tree(shared_dav_server, "/rcwrites") == {
        "f ü.bin": bytes(expected), "new.txt": b"new through the cache\n"}
