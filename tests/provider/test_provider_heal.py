"""A corrupted pack over real HTTP: the damaged file answers 5xx (logged), the others are
served, check --read-data names the path, re-uploading the file heals the repository."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.core_fixtures import flip_byte
from tests.server_fixtures import launch

DATA = random.Random(21).randbytes(300_000)
OTHER = random.Random(22).randbytes(300_000)


def check(server, *extra: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "davbackup", "check", "--read-data", "--repo", str(server.repo),
                           *extra], capture_output=True, text=True, env=server.env, timeout=240)


def test_corrupt_pack_byte_is_reported_and_healed_by_reupload(tmp_path: Path) -> None:
    server = launch(tmp_path / "heal")
    try:
        s = server.session()
        assert s.request("MKCOL", server.url + "/docs/").status_code == 201
        assert s.put(server.url + "/docs/thesis.pdf", data=DATA).status_code == 201
        assert s.put(server.url + "/docs/other.bin", data=OTHER).status_code == 201
        server.stop()
        conn = sqlite3.connect(server.repo / "catalog.sqlite")
        name, offset = conn.execute(  # thesis.pdf's first chunk (its version was written first)
            "SELECT p.name, c.offset FROM version_chunks vc JOIN chunks c ON c.id = vc.chunk_id"
            " JOIN packs p ON p.id = c.pack_id WHERE vc.offset = 0 AND vc.version_id ="
            " (SELECT min(id) FROM versions WHERE size = ?)", (len(DATA),)
        ).fetchone()
        conn.close()
        flip_byte(server.repo / "packs" / name[:2] / f"{name}.pack", offset + 100)
        report = check(server)
        assert report.returncode != 0 and "alice:/docs/thesis.pdf (current)" in report.stdout + report.stderr
        server.start()
        s = server.session()
        broken = s.get(server.url + "/docs/thesis.pdf")
        assert broken.status_code >= 500 or len(broken.content) != len(DATA)  # never the wrong bytes as if right
        assert broken.content != DATA
        assert s.get(server.url + "/docs/other.bin").content == OTHER
        assert "thesis.pdf" in server.log() and "verification" in server.log()
        assert s.put(server.url + "/docs/thesis.pdf", data=DATA).status_code == 204  # the user re-uploads
        assert s.get(server.url + "/docs/thesis.pdf").content == DATA
        server.stop()
        healed = check(server)
        assert healed.returncode == 0, healed.stdout + healed.stderr
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
