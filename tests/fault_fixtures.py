"""A real ``davbackup serve`` with fault injection on (``DAVBACKUP_TEST_FAULTS``, see
davbackup/faults.py), and helpers to arm and clear faults while it runs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from davbackup.faults import ENV
from tests.server_fixtures import DavServer, launch


def arm(control: Path, *rules: dict) -> None:
    """Replace the rules in ``control`` (a new file each time: a running plan notices every change)."""
    tmp = control.with_suffix(".tmp")
    tmp.write_text(json.dumps(list(rules)))
    os.replace(tmp, control)


@pytest.fixture
def fault_control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty rules file named by DAVBACKUP_TEST_FAULTS, for repositories opened in this test."""
    path = tmp_path / "faults.json"
    arm(path)
    monkeypatch.setenv(ENV, str(path))
    return path


@dataclass
class FaultyServer:
    server: DavServer
    control: Path
    #: every file whose write the server acknowledged, with its bytes (path -> (user, data))
    ledger: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def arm(self, *rules: dict) -> None:
        arm(self.control, *rules)

    def clear(self) -> None:
        self.arm()

    @contextmanager
    def faults(self, *rules: dict) -> Iterator[None]:
        self.arm(*rules)
        try:
            yield
        finally:
            self.clear()

    def env(self) -> dict[str, str]:
        env = self.server.env
        env[ENV] = str(self.control)
        return env

    def restart(self, *, crash: bool = False) -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(ENV, str(self.control))
            self.server.restart(crash=crash)


def launch_faulty(workdir: Path) -> FaultyServer:
    workdir.mkdir(parents=True, exist_ok=True)
    control = workdir / "faults.json"
    control.write_text("[]")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, str(control))
        server = launch(workdir / "dav")
    return FaultyServer(server, control)


@contextmanager
def faulty_server(workdir: Path) -> Iterator[FaultyServer]:
    """:func:`launch_faulty` for a ``with`` block: faults cleared and the server stopped after it."""
    fs = launch_faulty(workdir)
    try:
        yield fs
    finally:
        fs.clear()
        try:
            fs.server.stop()
        except Exception:
            fs.server.kill()
