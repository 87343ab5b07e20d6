"""The C++ resume client (scripts/cpp/davbackup_resume.cpp): builds, uploads, resumes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.resume_fixtures import CuttingProxy
from tests.server_fixtures import ROOT, DavServer

SOURCE = ROOT / "scripts" / "cpp" / "davbackup_resume.cpp"
MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built exactly as scripts/test builds it (into a temporary folder)."""
    out = tmp_path_factory.mktemp("cpp") / "davbackup-resume"
    result = subprocess.run(["g++", "-std=c++17", "-O2", "-Wall", "-o", str(out), str(SOURCE), "-lcurl"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    return out


def run(binary: Path, server: DavServer, url: str, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DAVBACKUP_PASSWORD=server.password("alice"))
    return subprocess.run([str(binary), "--user", "alice", *extra, url, str(path)], env=env, capture_output=True,
                          text=True, timeout=300)


def test_upload_stop_and_resume(binary, shared_dav_server, tmp_path):
    f = tmp_path / "cpp file.bin"
    data = os.urandom(5 * MiB + 11)
    f.write_bytes(data)
    r = run(binary, shared_dav_server, shared_dav_server.url + "/", f, "--part-size", "1M", "--stop-after-parts", "2")
    assert r.returncode == 75, r.stderr
    assert shared_dav_server.session().head(f"{shared_dav_server.url}/cpp%20file.bin").status_code == 404
    r = run(binary, shared_dav_server, shared_dav_server.url + "/", f, "--part-size", "1M")
    assert r.returncode == 0, r.stderr
    assert "resuming at byte 2097152" in r.stderr
    assert f"({len(data) - 2 * MiB} sent this run)" in r.stdout
    assert shared_dav_server.session().get(f"{shared_dav_server.url}/cpp%20file.bin").content == data


def test_upload_through_cutting_proxy(binary, shared_dav_server, tmp_path):
    f = tmp_path / "cut.bin"
    data = os.urandom(6 * MiB)
    f.write_bytes(data)
    with CuttingProxy(shared_dav_server.port, cut_range=(300_000, 2 * MiB), seed=3) as proxy:
        r = run(binary, shared_dav_server, f"{proxy.url}/cpp-cut.bin", f, "--part-size", "2M", "--retries", "30")
        assert r.returncode == 0, r.stderr
        assert proxy.cuts >= 2
    assert shared_dav_server.session().get(f"{shared_dav_server.url}/cpp-cut.bin").content == data


def test_wrong_password_and_usage(binary, shared_dav_server, tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    env = dict(os.environ, DAVBACKUP_PASSWORD="wrong")
    r = subprocess.run([str(binary), "--user", "alice", shared_dav_server.url + "/x.bin", str(f)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 5
    env.pop("DAVBACKUP_PASSWORD")
    r = subprocess.run([str(binary), "--user", "alice", shared_dav_server.url + "/x.bin", str(f)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "DAVBACKUP_PASSWORD" in r.stderr
