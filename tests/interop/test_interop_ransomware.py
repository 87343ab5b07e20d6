"""Ransomware drills: a client destroys a tree through a real client, one COPY restores it.

1. On a davfs2 mount, a script encrypts every file in place, renames each to
   ``*.locked`` and deletes the originals' names; then one ``COPY
   /.history/<T before>/drill/`` onto ``/drill/`` brings back every file byte for byte.
2. ``rclone sync`` mirrors a deletion (an emptied local folder) to the server; the same
   COPY restores it.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.interop_fixtures import (
    assert_same_tree,
    davfs2_mount,
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
    pytest.mark.timeout(300),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing: FUSE mounts are impossible here"),
]


def now_moment() -> str:
    time.sleep(1.05 - (time.time() % 1.0))  # a moment strictly after everything before
    stamp = datetime.fromtimestamp(time.time(), timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    time.sleep(1.05 - (time.time() % 1.0))  # and nothing after it shares its second
    return stamp


def upload(server: DavServer, root: str, files: dict[str, bytes]) -> None:
    session = server.session()
    assert session.request("MKCOL", url_of(server, root)).status_code == 201
    made: set[str] = set()
    for rel in sorted(files):
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folder = f"{root}{'/'.join(parts[:i])}/"
            if folder not in made:
                session.request("MKCOL", url_of(server, folder))
                made.add(folder)
        assert session.put(url_of(server, root + rel), data=files[rel]).status_code == 201


def restore(server: DavServer, moment: str, root: str) -> None:
    response = server.session().request(
        "COPY", f"{server.url}/.history/{moment}{root}", headers={"Destination": url_of(server, root), "Overwrite": "T"}
    )
    assert response.status_code in (201, 204), response.text


def test_davfs2_ransomware_drill(shared_dav_server: DavServer, public_tmp: Path) -> None:
    server = shared_dav_server
    files = sample_tree(11, big=1024 * 1024 + 5)  # names with ';' included (davfs2 sends it raw)
    upload(server, "/drill/", files)
    before = now_moment()
    with davfs2_mount(server, public_tmp, "drill") as mnt:
        victims = [p for p in (mnt / "drill").rglob("*") if p.is_file()]
        assert len(victims) == len(files)
        for path in victims:  # what ransomware does: encrypt in place, rename, delete
            data = path.read_bytes()
            path.write_bytes(bytes(b ^ 0x5A for b in data) + b"PAY UP")
            path.rename(path.with_name(path.name + ".locked"))
        (mnt / "drill" / "README-RANSOM.txt").write_text("send bitcoin")
    damaged = remote_tree(server, "/drill/")
    assert damaged and all(name.endswith(".locked") or name == "README-RANSOM.txt" for name in damaged)
    restore(server, before, "/drill/")
    assert_same_tree(remote_tree(server, "/drill/"), files)
    # the damage is itself kept in history
    after = server.session().request("PROPFIND", f"{server.url}/.history/", headers={"Depth": "1"})
    assert after.status_code == 207


def test_rclone_sync_mirrors_a_deletion_and_copy_restores(shared_dav_server: DavServer,
                                                          tmp_path: Path) -> None:
    server = shared_dav_server
    require_tool("rclone")
    files = sample_tree(12, big=300_000)
    local = tmp_path / "local"
    write_tree(local, files)
    home = tmp_path / "home"
    home.mkdir()
    (home / "rclone.conf").write_text("")
    env = {**os.environ, "HOME": str(home), "RCLONE_CONFIG": str(home / "rclone.conf"),
           "RCLONE_CONFIG_D_TYPE": "webdav", "RCLONE_CONFIG_D_URL": server.url + "/",
           "RCLONE_CONFIG_D_VENDOR": "other", "RCLONE_CONFIG_D_USER": "alice",
           "RCLONE_CONFIG_D_PASS": run(["rclone", "obscure", server.password("alice")]).stdout.strip()}
    run(["rclone", "copy", str(local), "d:mirror"], env=env, timeout=150)
    assert_same_tree(remote_tree(server, "/mirror/"), files)
    before = now_moment()
    for path in local.rglob("*"):
        if path.is_file():
            path.unlink()  # the user's disk died, or a script ran with the wrong path
    run(["rclone", "sync", str(local), "d:mirror"], env=env, timeout=150)
    assert remote_tree(server, "/mirror/") == {}
    restore(server, before, "/mirror/")
    assert_same_tree(remote_tree(server, "/mirror/"), files)
