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


@dataclass
class FaultyServer:
    server: DavServer
    control: Path
    #: every file whose write the server acknowledged, with its bytes (path -> (user, data))
    ledger: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def arm(self, *rules: dict) -> None:
        """Replace the rules (a new file each time: the server notices every change)."""
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(rules)))
        os.replace(tmp, self.control)

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
