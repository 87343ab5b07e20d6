"""SIGTERM while uploads are in flight: finished ones stay, unfinished ones leave no trace."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time

from tests.server_fixtures import DavServer


def _half_put(server: DavServer, path: str, total: int, sent: bytes) -> socket.socket:
    """A PUT whose headers and first bytes are sent, the rest never."""
    user, password = server.auth("alice")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {token}\r\n"
        f"Content-Length: {total}\r\n\r\n"
    ).encode()
    sock.sendall(head + sent)
    return sock


def test_sigterm_keeps_answered_uploads_and_drops_unfinished_ones(dav_server: DavServer) -> None:
    s = dav_server.session()
    done = os.urandom(3 * 1024 * 1024)
    assert s.put(f"{dav_server.url}/done.bin", data=done).status_code == 201
    old = b"previous version"
    assert s.put(f"{dav_server.url}/replaced.bin", data=old).status_code == 201

    partial_new = _half_put(dav_server, "/new.bin", 8 * 1024 * 1024, os.urandom(5 * 1024 * 1024))
    partial_over = _half_put(dav_server, "/replaced.bin", 8 * 1024 * 1024, os.urandom(2 * 1024 * 1024))
    time.sleep(0.5)  # the server is now inside both PUTs, waiting for more body
    started = time.monotonic()
    rc = dav_server.stop(timeout=60)
    assert rc == 0, dav_server.log()
    assert time.monotonic() - started < 60
    partial_new.close()
    partial_over.close()

    dav_server.start()
    s = dav_server.session()
    assert s.get(f"{dav_server.url}/done.bin").content == done
    assert s.get(f"{dav_server.url}/replaced.bin").content == old  # old version intact
    assert s.head(f"{dav_server.url}/new.bin").status_code == 404  # no trace
    dav_server.stop()
    check = subprocess.run(
        [sys.executable, "-m", "davbackup", "check", "--read-data", "--repo", str(dav_server.repo)],
        env=dav_server.env, capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
