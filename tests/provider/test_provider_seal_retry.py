"""A pack whose seal the catalog could not take (a full disk) is sealed later, without a restart.

gc never touches a pack that is still ``open`` (a writer may hold uncommitted chunks in
it). When the disk fills, the append that fails retires the active pack, and the seal
that follows is a catalog write, which the same full disk may refuse. Left ``open``,
the pack's space could never be reclaimed while the server runs, and the space reserve
could never be taken back (CI saw this once: a PUT after ``gc`` still got 507). The
server now tries the seal again at the next write and before every deletion.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault_fixtures import FaultyServer, faulty_server
from tests.server_fixtures import davbackup

MiB = 1024 * 1024


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[FaultyServer]:
    with faulty_server(tmp_path / "seal") as fs:
        yield fs


def _pack_states(repo: Path) -> dict[str, str]:
    """pack name -> state, as the catalog has it now (a read beside the running server)."""
    conn = sqlite3.connect(repo / "catalog.sqlite")
    try:
        return {name: state for name, state in conn.execute("SELECT name, state FROM packs")}
    finally:
        conn.close()


def test_seal_refused_by_a_full_disk_is_written_before_the_next_deletion(faulty: FaultyServer) -> None:
    server = faulty.server
    s = server.session("alice")
    first = os.urandom(2 * MiB)
    assert s.put(f"{server.url}/first.bin", data=first).status_code == 201
    (data_pack,) = [name for name, state in _pack_states(server.repo).items() if state == "open"]

    # the disk "fills": the next append fails, and so does every catalog commit, the seal included
    with faulty.faults({"op": "append", "error": "ENOSPC", "kind": "data"}, {"op": "commit", "error": "ENOSPC"}):
        r = s.put(f"{server.url}/second.bin", data=os.urandom(2 * MiB))
        assert r.status_code == 507, (r.status_code, r.text)
        assert _pack_states(server.repo)[data_pack] == "open"
    assert "could not be marked sealed" in server.log_path.read_text()

    # space comes back; the first deletion writes the seal before anything else
    assert s.delete(f"{server.url}/first.bin").status_code == 204
    assert _pack_states(server.repo)[data_pack] == "sealed"
    assert s.get(f"{server.url}/second.bin").status_code == 404

    # so gc can reclaim the pack while the server runs
    davbackup(["history", "set", "--repo", str(server.repo), "--keep-all", "0", "--daily", "0", "--weekly", "0"],
              faulty.env())
    gc = subprocess.run([sys.executable, "-m", "davbackup", "gc", "--repo", str(server.repo), "--grace", "0"],
                        capture_output=True, text=True, env=faulty.env(), timeout=300)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert data_pack not in _pack_states(server.repo), gc.stdout
    assert not (server.repo / "packs" / data_pack).exists() and not list(server.repo.rglob(f"{data_pack}*"))
    assert s.put(f"{server.url}/third.bin", data=b"after").status_code == 201
    assert s.get(f"{server.url}/third.bin").content == b"after"
