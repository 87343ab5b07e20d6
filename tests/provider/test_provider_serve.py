"""`davbackup serve` as a user starts it: first run, TLS, transport checks, config file,
clean shutdown on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.server_fixtures import ROOT, _env, create_repository, free_port

USERS = {"alice": ("alice-password", "rw")}


def _serve_env(home: Path, *, passphrase: bool) -> dict[str, str]:
    env = _env(home)
    if not passphrase:
        env.pop("DAVBACKUP_PASSPHRASE")
    return env


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "davbackup", "serve", *args],
                            cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(url: str, proc: subprocess.Popen[str], *, verify: bool = True) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited:\n{proc.stdout.read()}")
        try:
            requests.options(url, timeout=1, verify=verify)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    return output


def test_first_run_creates_default_repository(tmp_path: Path) -> None:
    env = _serve_env(tmp_path / "home", passphrase=False)
    port = free_port()
    proc = _start(["--port", str(port)], tmp_path, env)
    url = f"http://127.0.0.1:{port}/"
    _wait_for(url, proc)
    assert (tmp_path / "davbackup-data" / "config.json").exists()
    stored = tmp_path / "home" / ".config" / "davbackup" / "davbackup-data.passphrase"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert not any((tmp_path / "davbackup-data").rglob("*.passphrase"))
    output = _stop(proc)
    assert str(stored) in output and "Back that file up" in output
    password = re.search(r"First user: admin\s+password: (\S+)", output).group(1)

    # second start: existing repository, passphrase from the stored file
    proc = _start(["--port", str(port)], tmp_path, env)
    _wait_for(url, proc)
    try:
        assert requests.put(url + "x.txt", data=b"x", auth=("admin", password)).status_code == 201
        assert requests.get(url, auth=("admin", "wrong-password")).status_code == 401
    finally:
        output = _stop(proc)
    assert "password:" not in output  # shown only once
    assert "received SIGTERM" in output and "stopped" in output


def test_non_loopback_needs_tls(tmp_path: Path) -> None:
    env = _env(tmp_path)
    create_repository(tmp_path / "repo", env, USERS)
    result = subprocess.run(
        [sys.executable, "-m", "davbackup", "serve", "--repo", str(tmp_path / "repo"),
         "--host", "0.0.0.0", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--allow-insecure-http" in result.stderr

    port = free_port()
    proc = _start(["--repo", str(tmp_path / "repo"), "--host", "0.0.0.0", "--port", str(port),
                   "--allow-insecure-http"], tmp_path, env)
    _wait_for(f"http://127.0.0.1:{port}/", proc)
    assert "WARNING" in _stop(proc)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_self_signed_tls(tmp_path: Path) -> None:
    env = _env(tmp_path)
    create_repository(tmp_path / "repo", env, USERS)
    port = free_port()
    proc = _start(["--repo", str(tmp_path / "repo"), "--host", "0.0.0.0", "--port", str(port),
                   "--tls-self-signed"], tmp_path, env)
    url = f"https://127.0.0.1:{port}/"
    try:
        _wait_for(url, proc, verify=False)
        cert = tmp_path / "repo" / "tls" / "cert.pem"
        key = tmp_path / "repo" / "tls" / "key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        # the certificate names localhost, so pinning it verifies
        response = requests.get(f"https://localhost:{port}/", auth=("alice", "alice-password"),
                                verify=str(cert))
        assert response.status_code == 200
    finally:
        output = _stop(proc)
    assert "SHA-256 fingerprint" in output


def test_config_file_and_command_line(tmp_path: Path) -> None:
    env = _env(tmp_path)
    create_repository(tmp_path / "repo", env, USERS)
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text("repo: repo\nport: 1\nwebdav:\n  allow_propfind_infinity: true\n")
    proc = _start(["--config", str(config), "--port", str(port)], tmp_path, env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, proc)
        response = requests.request("PROPFIND", url, auth=("alice", "alice-password"),
                                    headers={"Depth": "infinity"})
        assert response.status_code == 207
    finally:
        _stop(proc)
    config.write_text("repo: repo\nserver:\n  thread: 3\n")
    result = subprocess.run([sys.executable, "-m", "davbackup", "serve", "--config", str(config)],
                            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and "server.thread" in result.stderr


def test_core_never_imports_provider() -> None:
    """Dependency direction: only davbackup/cli/serve.py may import provider/ or wsgidav."""
    offenders = []
    for path in (ROOT / "davbackup").rglob("*.py"):
        if path == ROOT / "davbackup" / "cli" / "serve.py":
            continue
        text = path.read_text()
        if re.search(r"^\s*(from|import)\s+(provider|wsgidav)\b", text, re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    code = ("import sys, davbackup.cli; davbackup.cli.build_parser(); "
            "print([m for m in sys.modules if m.startswith(('provider', 'wsgidav'))])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
