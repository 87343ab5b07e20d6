"""The litmus WebDAV compliance suite (basic, copymove, props, locks, http) against
`davbackup serve`: every suite must run and nothing may fail."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.server_fixtures import DavServer

SUITES = ("basic", "copymove", "props", "locks", "http")
SUMMARY = re.compile(
    r"<- summary for `(?P<suite>\w+)': of (?P<run>\d+) tests run: "
    r"(?P<passed>\d+) passed, (?P<failed>\d+) failed"
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("litmus") is None, reason="litmus is not installed"),
]


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
        ["litmus", dav_server.url + "/", user, password],
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    summaries = parse_summaries(output)
    assert set(summaries) == set(SUITES), output
    failures = {suite: s for suite, s in summaries.items() if s[2] or s[1] != s[0]}
    assert not failures, output
    assert "WARNING" not in output, output
    assert sum(run for run, _p, _f in summaries.values()) >= 104
