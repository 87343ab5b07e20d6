"""Operations (issue 8): the health endpoint over a real server, the systemd unit
(sandboxing directives, checked by systemd-analyze where present), and SECURITY.md."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.server_fixtures import DavServer

ROOT = Path(__file__).resolve().parents[2]
HEALTH = "/.well-known/davbackup-health"


def test_health_needs_no_credentials_and_reveals_nothing(server: DavServer) -> None:
    for auth in (None, server.auth("alice"), ("alice", "wrong-password")):
        response = requests.get(server.url + HEALTH, auth=auth, timeout=10)
        assert response.status_code == 200
        assert response.content == b"ok\n"
        assert response.headers["Cache-Control"] == "no-store"
        assert "WWW-Authenticate" not in response.headers
        assert set(response.headers) <= {"Content-Type", "Content-Length", "Cache-Control",
                                         "Date", "Server", "Connection", "Keep-Alive"}
        assert response.headers.get("Server", "davbackup") == "davbackup"  # no version
    head = requests.head(server.url + HEALTH, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == "3"
    for method in ("PUT", "DELETE", "PROPFIND", "MKCOL", "LOCK", "POST"):
        assert requests.request(method, server.url + HEALTH, data=b"x", timeout=10).status_code == 405
    # it is not a file: alice cannot put one there, and it never shows in her tree
    with server.session("alice") as alice:
        alice.request("MKCOL", server.url + "/.well-known")
        assert alice.put(server.url + HEALTH, data=b"mine").status_code == 405
        assert requests.get(server.url + HEALTH, timeout=10).content == b"ok\n"
    assert HEALTH not in server.log()  # probes do not flood the access log


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "config" / "davbackup.service")
    return parser


def test_systemd_unit_sandboxing() -> None:
    service = _unit()["Service"]
    assert service["User"] == "davbackup" and service["Group"] == "davbackup"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ReadWritePaths"] == "/var/lib/davbackup"
    assert service["ProtectHome"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert service["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert service["UMask"] == "0077"
    exec_start = service["ExecStart"].split()
    assert exec_start[1] == "serve" and "--passphrase-file" in exec_start
    assert "DAVBACKUP_PASSPHRASE" not in service.get("Environment", "")


def test_systemd_unit_flags_exist() -> None:
    """Every flag the unit passes is one `davbackup serve` accepts."""
    exec_start = _unit()["Service"]["ExecStart"].split()
    result = subprocess.run([sys.executable, "-m", "davbackup", "serve", "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    flags = [arg for arg in exec_start if arg.startswith("--")]
    assert flags and all(flag in result.stdout for flag in flags)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    text = (ROOT / "config" / "davbackup.service").read_text()
    unit = tmp_path / "davbackup.service"
    unit.write_text(text.replace("/opt/davbackup/bin/davbackup", "/bin/true"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "rror" not in result.stderr, result.stderr


def test_security_document() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    for heading in ("## Threat model", "### A network attacker", "### An authenticated user",
                    "### A local user", "### A stolen disk", "## Limits",
                    "## Running behind a TLS proxy", "## Reporting a problem"):
        assert heading in text, heading
    example = (ROOT / "config" / "davbackup.example.yaml").read_text()
    for option in ("max_header_bytes", "header_timeout", "slow_header_workers", "max_connections",
                   "max_locks_per_resource", "max_lock_owner", "max_proppatch_body",
                   "trusted_proxies", "account_factor"):
        assert option in text and option in example, option
    assert "Login throttling" in (ROOT / "README.md").read_text()
