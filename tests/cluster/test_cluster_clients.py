"""Real WebDAV clients against nodes of a PostgreSQL + Ceph RGW cluster (issue 11).

The interoperability suite (tests/interop/) runs rclone and davfs2 against an
embedded server; here the same clients talk to ``davbackup serve --catalog …
--packs …`` nodes, and what one client wrote through node A is read back by a real
client through node B (B never saw the upload: it finds the files in the shared
catalog and reads their chunks from the bucket).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from tests.cluster_fixtures import Cluster
from tests.interop_fixtures import (
    assert_same_tree,
    davfs2_mount,
    rclone_env,
    read_tree,
    remote_tree,
    run,
    sample_tree,
    write_tree,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]


def _rclone(env: dict[str, str], *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return run(["rclone", "--low-level-retries", "1", "--retries", "1", *args], env=env, check=check, timeout=240)


def test_rclone_sync_through_one_node_and_check_through_the_other(shared_cluster: Cluster, tmp_path: Path) -> None:
    cluster = shared_cluster
    a, b = cluster.nodes
    password = a.password("alice")
    env = rclone_env(tmp_path / "rclone-home", {
        "nodea": (a.url + "/", "alice", password, "owncloud"),
        "nodeb": (b.url + "/", "alice", password, "owncloud"),
    })
    files = sample_tree(seed=111)
    src = tmp_path / "src"
    write_tree(src, files)
    _rclone(env, "sync", str(src), "nodea:rc")
    assert_same_tree(remote_tree(b, "/rc"), files)  # plain GETs through B
    # rclone compares SHA-1 sums (oc:checksums) through B, then every byte
    same = _rclone(env, "check", str(src), "nodeb:rc")
    assert "hashes could not be checked" not in same.stderr, same.stderr
    _rclone(env, "check", "--download", str(src), "nodeb:rc")
    # change the local tree and sync it through B: A sees the result
    rng = random.Random(112)
    (src / "small.txt").unlink()
    shutil.rmtree(src / "deep" / "a" / "b")
    (src / "big.bin").write_bytes(rng.randbytes(4 * 1024 * 1024 + 5))
    (src / "added dir").mkdir()
    (src / "added dir" / "new.bin").write_bytes(rng.randbytes(700_000))
    _rclone(env, "sync", str(src), "nodeb:rc")
    _rclone(env, "check", "--download", str(src), "nodea:rc")
    assert_same_tree(remote_tree(a, "/rc"), read_tree(src))
    # and down again with rclone through A: byte for byte
    _rclone(env, "copy", "nodea:rc", str(tmp_path / "down"))
    assert_same_tree(read_tree(tmp_path / "down"), read_tree(src))
    # nothing left to do through either node
    for remote in ("nodea:rc", "nodeb:rc"):
        again = _rclone(env, "sync", "-v", str(src), remote)
        assert "Copied" not in again.stderr and "Deleted" not in again.stderr, again.stderr
    cluster.cli("check")


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing: FUSE mounts are impossible here")
def test_davfs2_writes_through_one_node_and_reads_through_the_other(
    shared_cluster: Cluster, public_tmp: Path, tmp_path: Path
) -> None:
    cluster = shared_cluster
    a, b = cluster.nodes
    files = sample_tree(seed=113)
    src = tmp_path / "src"
    write_tree(src, files)
    with davfs2_mount(a, public_tmp, "a") as mnt:
        shutil.copytree(src, mnt / "mounted", copy_function=shutil.copyfile)
        assert_same_tree(read_tree(mnt / "mounted"), files)
    # after umount davfs2 has uploaded everything (through A)
    assert_same_tree(remote_tree(b, "/mounted"), files)
    # a second mount, of B with a fresh cache: reads come from B; edit through it
    replacement = os.urandom(2 * 1024 * 1024 + 7)
    with davfs2_mount(b, public_tmp, "b") as mnt:
        tree = mnt / "mounted"
        assert_same_tree(read_tree(tree), files)
        (tree / "big.bin").write_bytes(replacement)
        (tree / "small.txt").rename(tree / "renamed.txt")
        (tree / "empty.txt").unlink()
    expected = dict(files)
    expected["big.bin"] = replacement
    expected["renamed.txt"] = expected.pop("small.txt")
    del expected["empty.txt"]
    assert_same_tree(remote_tree(a, "/mounted"), expected)
    cluster.cli("check")
