"""The session lifetime the server is configured with is the one `davbackup gc` applies.

A real server configured with ``uploads.session_ttl`` of 48 h holds half of a range-PUT
upload; `davbackup gc` then runs as its own process with its clock 25 h ahead
(``DAVBACKUP_CLOCK_OFFSET``, davbackup/clock.py). Before the lifetime was recorded
in the catalog, gc assumed 24 h and threw the session away; now it survives and the
client completes the upload. A server left at the default lifetime is the control:
the same gc expires its session.
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from tests.server_fixtures import DavServer, davbackup, launch

HOUR = 3600
TOTAL = 3 * 1024 * 1024 + 17


def _put_half(server: DavServer, data: bytes) -> str:
    url = server.url + "/half.bin"
    half = len(data) // 2
    answer = requests.put(url, data=data[:half], auth=server.auth(),
                          headers={"Content-Range": f"bytes 0-{half - 1}/{len(data)}"}, timeout=30)
    assert answer.status_code == 308, answer.text
    assert answer.headers["Upload-Offset"] == str(half)
    return url


def _held(server: DavServer, url: str) -> requests.Response:
    return requests.put(url, data=b"", auth=server.auth(), headers={"Content-Range": f"bytes */{TOTAL}"}, timeout=30)


def _gc_later(server: DavServer, hours: float) -> str:
    env = dict(server.env, DAVBACKUP_CLOCK_OFFSET=str(hours * HOUR))
    return davbackup(["gc", "--repo", str(server.repo)], env).stdout


def test_gc_keeps_a_session_the_server_keeps_for_48_hours(tmp_path: Path):
    data = os.urandom(TOTAL)
    server = launch(tmp_path / "dav", config_yaml="uploads:\n  session_ttl: 172800\n")
    try:
        url = _put_half(server, data)
        out = _gc_later(server, 25)
        assert "0 upload sessions expired" in out, out
        held = _held(server, url)
        assert held.status_code == 308 and held.headers["Upload-Offset"] == str(TOTAL // 2)
        half = TOTAL // 2
        done = requests.put(url, data=data[half:], auth=server.auth(),
                            headers={"Content-Range": f"bytes {half}-{TOTAL - 1}/{TOTAL}"}, timeout=30)
        assert done.status_code == 201, done.text
        assert requests.get(url, auth=server.auth(), timeout=30).content == data
        # past the configured lifetime gc does expire what is left idle
        _put_half(server, data[:-1] + b"!")  # a new upload of the (now complete) file
        assert "1 upload sessions expired" in _gc_later(server, 49)
    finally:
        server.stop()


def test_gc_expires_a_session_of_a_default_server_after_25_hours(tmp_path: Path):
    server = launch(tmp_path / "dav")
    try:
        url = _put_half(server, os.urandom(TOTAL))
        assert "1 upload sessions expired" in _gc_later(server, 25)
        held = _held(server, url)
        assert held.status_code == 308 and held.headers["Upload-Offset"] == "0"
    finally:
        server.stop()
