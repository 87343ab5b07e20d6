"""Pytest fixtures that run a real ``davbackup serve`` on loopback.

Import the fixtures from ``tests/conftest.py``::

    from tests.server_fixtures import dav_server, shared_dav_server

Each server gets its own repository, made with the CLI exactly as a user would
(``davbackup init``, ``davbackup user add`` with the password on stdin), and runs as
a subprocess (``python -m davbackup serve``) on a free port of 127.0.0.1. The
:class:`DavServer` handed to tests knows the URL, the users and their passwords, and
can ``kill()`` (SIGKILL, for crash tests), ``stop()`` (SIGTERM) and ``restart()``.

* ``dav_server``: a fresh server per test (for restarts, crashes, throttling).
* ``shared_dav_server``: one server per test module (for everything else; tests
  should work below a path of their own).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "fixture passphrase, not secret"

#: name -> (password, role)
DEFAULT_USERS: dict[str, tuple[str, str]] = {
    "alice": ("alice-password", "rw"),
    "bob": ("bob-password", "rw"),
    "reader": ("reader-password", "ro"),
}

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DAVBACKUP_PASSPHRASE"] = PASSPHRASE
    env["HOME"] = str(home)  # never touch the real ~/.config
    env.pop("XDG_CONFIG_HOME", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")  # cheap key slots for tests
    return env


def davbackup(args: list[str], env: dict[str, str], *, stdin: str | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI; raise with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "davbackup", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"davbackup {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def create_repository(
    repo: Path, env: dict[str, str], users: dict[str, tuple[str, str]]
) -> None:
    davbackup(["init", "--repo", str(repo)], env)
    for name, (password, role) in users.items():
        davbackup(["user", "add", name, "--repo", str(repo), "--role", role], env,
                  stdin=password + "\n")


@dataclass
class DavServer:
    """A running ``davbackup serve`` subprocess and what a test needs to talk to it."""

    workdir: Path
    repo: Path
    port: int
    users: dict[str, tuple[str, str]]
    config: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return _env(self.workdir)

    def password(self, user: str) -> str:
        return self.users[user][0]

    def auth(self, user: str = "alice") -> tuple[str, str]:
        return (user, self.password(user))

    def session(self, user: str = "alice") -> requests.Session:
        session = requests.Session()
        session.auth = self.auth(user)
        return session

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.workdir / f"server-{self.starts}.log"
        args = [sys.executable, "-m", "davbackup", "serve", "--repo", str(self.repo),
                "--host", "127.0.0.1", "--port", str(self.port)]
        if self.config is not None:
            args += ["--config", str(self.config)]
        args += self.extra_args
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                requests.request("OPTIONS", self.url + "/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not answer within {START_TIMEOUT}s:\n{self.log()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait: the clean shutdown path."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup at all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or kill, with ``crash``) and start again on the same port."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()


def launch(workdir: Path, *, users: dict[str, tuple[str, str]] | None = None,
           config_yaml: str | None = None, extra_args: list[str] | None = None) -> DavServer:
    """Create a repository under ``workdir`` and start a server on it."""
    users = dict(DEFAULT_USERS if users is None else users)
    workdir.mkdir(parents=True, exist_ok=True)
    repo = workdir / "repo"
    create_repository(repo, _env(workdir), users)
    config = None
    if config_yaml is not None:
        config = workdir / "davbackup.yaml"
        config.write_text(config_yaml, encoding="utf-8")
    server = DavServer(workdir=workdir, repo=repo, port=free_port(), users=users,
                       config=config, extra_args=list(extra_args or []))
    server.start()
    return server


@pytest.fixture
def dav_server(tmp_path: Path) -> Iterator[DavServer]:
    """A fresh server (own repository) for one test."""
    server = launch(tmp_path / "dav")
    try:
        yield server
    finally:
        if not _stops(server):
            server.kill()


@pytest.fixture(scope="module")
def shared_dav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    """One server for a whole test module."""
    server = launch(tmp_path_factory.mktemp("shared-dav"))
    try:
        yield server
    finally:
        if not _stops(server):
            server.kill()


def _stops(server: DavServer) -> bool:
    """Stop cleanly; False if that failed (the caller then kills)."""
    try:
        server.stop()
        return True
    except Exception:
        return False
