"""A power cut under a real server: its catalog's unsynced WAL tail is lost, and the
journal brings back every acknowledged write (DESIGN.md §20.7).

The server's catalog commits without syncing the WAL; its journal records are synced
before each COMMIT. The test copies the catalog files at a point where the WAL was
just synced (a checkpoint), goes on writing over HTTP (PUT new and over existing
files, one deduplicated, MKCOL, MOVE, DELETE, PROPPATCH), kills the server with
SIGKILL, puts the copy back (what a disk holds after a power cut: the later commits
were never synced) with the boot recorded in it made an earlier one (the machine
restarted), and starts the server again. Every acknowledged file must be there byte
for byte, the property set, the deleted and moved files gone from their old places,
and a PUT whose COMMIT failed (its caller got 500) must not come back.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from tests.fault_fixtures import FaultyServer, launch_faulty
from tests.power_cut import power_cut, synced_copy
from tests.server_fixtures import davbackup

PROPPATCH = (
    '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:power-cut">'
    "<D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"
)


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[FaultyServer]:
    fs = launch_faulty(tmp_path / "power-cut")
    try:
        yield fs
    finally:
        fs.server.kill()


@pytest.mark.timeout(300)
def test_a_power_cut_loses_no_acknowledged_put(faulty: FaultyServer) -> None:
    server = faulty.server
    s = server.session()
    base = server.url + "/cut"
    assert s.request("MKCOL", base + "/").status_code == 201
    kept = os.urandom(300_000)
    expected: dict[str, bytes] = {"/cut/a.txt": b"first", "/cut/kept.bin": kept, "/cut/gone.txt": b"to be deleted"}
    for path, data in expected.items():
        assert s.put(server.url + path, data=data).status_code == 201
    faulty.arm({"op": "commit", "error": "EIO", "times": 1})
    assert s.put(base + "/failed.txt", data=b"its COMMIT fails").status_code == 500
    faulty.clear()
    copy = synced_copy(server.repo)

    expected["/cut/a.txt"] = os.urandom(6000)
    assert s.put(base + "/a.txt", data=expected["/cut/a.txt"]).status_code == 204
    for i in range(10):
        expected[f"/cut/n{i}.bin"] = os.urandom(4096 + i)
        assert s.put(base + f"/n{i}.bin", data=expected[f"/cut/n{i}.bin"]).status_code == 201
    expected["/cut/dup.bin"] = kept
    assert s.put(base + "/dup.bin", data=kept).status_code == 201
    assert s.request("MKCOL", server.url + "/later/").status_code == 201
    moved = s.request("MOVE", base + "/n0.bin", headers={"Destination": server.url + "/later/n0.bin"})
    assert moved.status_code == 201
    expected["/later/n0.bin"] = expected.pop("/cut/n0.bin")
    assert s.delete(base + "/gone.txt").status_code == 204
    del expected["/cut/gone.txt"]
    assert s.request("PROPPATCH", base + "/a.txt", data=PROPPATCH,
                     headers={"Content-Type": "application/xml"}).status_code == 207

    server.kill()
    power_cut(server.repo, copy)
    faulty.restart()
    assert "the catalog lacked journal records" in server.log()
    for path, data in expected.items():
        got = s.get(server.url + path)
        assert got.status_code == 200 and got.content == data, path
    for path in ("/cut/failed.txt", "/cut/gone.txt", "/cut/n0.bin"):
        assert s.get(server.url + path).status_code == 404, path
    found = s.request("PROPFIND", base + "/a.txt", headers={"Depth": "0"},
                      data='<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>')
    assert found.status_code == 207 and "blue" in found.text
    server.stop()
    davbackup(["check", "--repo", str(server.repo), "--read-data"], server.env)  # raises unless clean
