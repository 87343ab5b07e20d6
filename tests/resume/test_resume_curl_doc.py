"""The curl recipe in README.md, run exactly as written.

The fenced ``bash`` block is extracted and run with bash; only the ``URL=`` line at
its top is replaced (the password comes from $DAVBACKUP_PASSWORD as the recipe says,
the user is the recipe's ``alice``, the file its ``backup.tar`` in the working
folder). It runs through a proxy that cuts every connection, so the script must
resume, and again after the upload is complete.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.resume_fixtures import CuttingProxy, sha256_b64
from tests.server_fixtures import DavServer

DOC = Path(__file__).resolve().parents[2] / "README.md"


def recipe() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "the document must hold exactly one bash block"
    return blocks[0]


def with_url(script: str, url: str) -> str:
    lines = script.splitlines()
    assert lines[0].startswith("URL="), "URL must be the first variable of the recipe"
    assert any(line.startswith("DAVUSER=") for line in lines[:5])
    assert any(line.startswith("DAVPASS=") for line in lines[:5])
    lines[0] = f'URL="{url}"'
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_recipe_resumes_through_cuts(shared_dav_server: DavServer, tmp_path: Path):
    data = os.urandom(5 * 1024 * 1024 + 4321)
    (tmp_path / "backup.tar").write_bytes(data)
    script = tmp_path / "resume.sh"
    env = dict(os.environ, DAVBACKUP_PASSWORD=shared_dav_server.password("alice"))
    with CuttingProxy(shared_dav_server.port, cut_range=(400_000, 2_000_000), seed=7) as proxy:
        script.write_text(with_url(recipe(), f"{proxy.url}/curl-recipe.tar"))
        result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "upload complete" in result.stdout
        assert proxy.cuts >= 2
    got = shared_dav_server.session("alice").get(f"{shared_dav_server.url}/curl-recipe.tar")
    assert got.content == data

    # run again after completion: it must notice and change nothing
    script.write_text(with_url(recipe(), f"{shared_dav_server.url}/curl-recipe.tar"))
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert shared_dav_server.session("alice").get(f"{shared_dav_server.url}/curl-recipe.tar").content == data


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_recipe_continues_a_half_done_upload(shared_dav_server: DavServer, tmp_path: Path):
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "backup.tar").write_bytes(data)
    url = f"{shared_dav_server.url}/curl-half.tar"
    alice = shared_dav_server.session("alice")
    digest = sha256_b64(data)
    r = alice.put(url, data=data[:1_000_000], headers={
        "Content-Range": f"bytes 0-999999/{len(data)}", "Repr-Digest": f"sha-256=:{digest}:"})
    assert r.status_code == 308
    script = tmp_path / "resume.sh"
    script.write_text(with_url(recipe(), url))
    env = dict(os.environ, DAVBACKUP_PASSWORD=shared_dav_server.password("alice"))
    with_log = subprocess.run(["bash", "-x", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    assert with_log.returncode == 0, with_log.stderr[-3000:]
    assert "bytes 1000000-" in with_log.stderr  # it continued, it did not start over
    assert alice.get(url).content == data
