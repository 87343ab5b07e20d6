"""The webdavclient3 backup script in docs/clients.md, run as printed.

The fenced ``python`` block is extracted; only its four settings (server, user,
source, target) are replaced. It backs up a tree with awkward names, is run again
after a change (only what changed is sent), and the server's tree is read back with
plain PROPFIND/GET.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.interop_fixtures import assert_same_tree, remote_tree, sample_tree, write_tree
from tests.server_fixtures import DavServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
SETTINGS = ("SERVER", "USER", "SOURCE", "TARGET")


def backup_script(server: str, source: Path, target: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/clients.md must hold exactly one python block"
    values = {"SERVER": server, "USER": "alice", "SOURCE": str(source), "TARGET": target}
    lines = blocks[0].splitlines()
    for name in SETTINGS:
        (index,) = [i for i, line in enumerate(lines[:8]) if line.startswith(f"{name} = ")]
        lines[index] = f"{name} = {values[name]!r}"
    return "\n".join(lines) + "\n"


def run_backup(script: Path, server: DavServer) -> str:
    env = dict(os.environ, DAVBACKUP_PASSWORD=server.password("alice"))
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_backup_script_from_the_guide(shared_dav_server: DavServer,
                                      tmp_path: Path) -> None:
    server = shared_dav_server
    files = sample_tree(seed=21)
    source = tmp_path / "Documents"
    write_tree(source, files)
    past = time.time() - 3600  # files older than their upload, as on a real machine
    for path in source.rglob("*"):
        os.utime(path, (past, past))
    script = tmp_path / "backup.py"
    script.write_text(backup_script(f"{server.url}/", source, "laptop/Dokumente ü"))

    first = run_backup(script, server)
    assert f"backup complete: {len(files)} uploaded, 0 unchanged" in first
    assert_same_tree(remote_tree(server, "/laptop/Dokumente ü/"), files)

    # change one file (same size, newer), add one in a new folder; run again
    changed = "small.txt"
    (source / changed).write_bytes(files[changed].upper())
    (source / "neu" / "tief").mkdir(parents=True)
    (source / "neu" / "tief" / "neu.txt").write_bytes(b"added later\n")
    second = run_backup(script, server)
    assert f"backup complete: 2 uploaded, {len(files) - 1} unchanged" in second
    expected = dict(files)
    expected[changed] = files[changed].upper()
    expected["neu/tief/neu.txt"] = b"added later\n"
    assert_same_tree(remote_tree(server, "/laptop/Dokumente ü/"), expected)
