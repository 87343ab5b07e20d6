"""The litmus WebDAV compliance suite (basic, copymove, props, locks, http) against
`davbackup serve`: every test of every suite must run and pass (litmus 0.13, which
scripts/test installs: 104 tests; a missing litmus is a failure, not a skip)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.interop_fixtures import require_tool
from tests.server_fixtures import DavServer

#: suite -> tests it runs, in litmus 0.13
SUITES = {"basic": 16, "copymove": 13, "props": 30, "locks": 41, "http": 4}
SUMMARY = re.compile(
    r"<- summary for `(?P<suite>\w+)': of (?P<run>\d+) tests run: "
    r"(?P<passed>\d+) passed, (?P<failed>\d+) failed"
)

pytestmark = pytest.mark.interop


def parse_summaries(output: str) -> dict[str, tuple[int, int, int]]:
    """suite -> (run, passed, failed) from litmus's summary lines."""
    return {
        m["suite"]: (int(m["run"]), int(m["passed"]), int(m["failed"]))
        for m in SUMMARY.finditer(output)
    }


def test_parse_summaries() -> None:
    text = "<- summary for `basic': of 16 tests run: 15 passed, 1 failed. 93.8%\n"
    assert parse_summaries(text) == {"basic": (16, 15, 1)}


def test_litmus_passes_everything(dav_server: DavServer) -> None:
    user, password = dav_server.auth("alice")
    result = subprocess.run(
        [require_tool("litmus"), dav_server.url + "/", user, password],
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    summaries = parse_summaries(output)
    assert summaries == {suite: (n, n, 0) for suite, n in SUITES.items()}, output
    assert sum(SUITES.values()) == 104
    assert "WARNING" not in output, output
