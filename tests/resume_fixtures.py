"""Helpers for the resume and client tests: a connection-cutting TCP proxy, an
in-process server (for a short session lifetime), raw half-sent requests, and small
protocol loops that resume each upload protocol.

The servers themselves come from :mod:`tests.server_fixtures`.
"""

from __future__ import annotations

import base64
import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

CHUNK = 64 * 1024


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that can cut connections and count bytes.

    ``cut_range=(lo, hi)``: every connection is closed abruptly (both sides) after a
    random number of client→server bytes in [lo, hi]. ``rate``: client→server bytes per
    second, ``down_rate`` server→client (None: unlimited). ``sent`` counts client→server bytes, ``received``
    server→client bytes, ``cuts`` the connections cut.
    """

    def __init__(self, upstream_port: int, *, cut_range: tuple[int, int] | None = None,
                 rate: int | None = None, down_rate: int | None = None, seed: int = 1) -> None:
        self.upstream_port = upstream_port
        self.cut_range = cut_range
        self.rate = rate
        self.down_rate = down_rate
        self.sent = 0
        self.received = 0
        self.cuts = 0
        self.connections = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_counters(self) -> None:
        with self._lock:
            self.sent = self.received = self.cuts = self.connections = 0

    def stop(self) -> None:
        self._stopped = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def __enter__(self) -> "CuttingProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self.connections += 1
                budget = self._random.randint(*self.cut_range) if self.cut_range else None
                self._sockets += [client, upstream]
            state = {"budget": budget, "closed": False}
            threading.Thread(target=self._pump, args=(client, upstream, True, state), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False, state), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool, state: dict) -> None:
        started = time.monotonic()
        moved = 0
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                if upstream and state["budget"] is not None:
                    if len(data) >= state["budget"]:
                        data = data[: state["budget"]]
                        dst.sendall(data)
                        with self._lock:
                            self.sent += len(data)
                            self.cuts += 1
                        break  # cut: close both directions
                    state["budget"] -= len(data)
                dst.sendall(data)
                with self._lock:
                    if upstream:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
                rate = self.rate if upstream else self.down_rate
                if rate:
                    moved += len(data)
                    ahead = moved / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            if not state["closed"]:
                state["closed"] = True
                _close(src)
                _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


@contextmanager
def inprocess_server(workdir: Path, *, ttl: float) -> Iterator[tuple[str, object]]:
    """A server inside this process whose upload sessions expire after ``ttl`` seconds.

    The lifetime is the ``upload_session_ttl`` server setting (``uploads.session_ttl``
    in the config file); running in-process lets tests reach the repository. Yields (url, repo).
    """
    from tests.inprocess_server import inprocess_app_server

    with inprocess_app_server(workdir, upload_session_ttl=ttl) as (url, repo):
        yield url, repo


class HalfSent:
    """A request whose headers and first body bytes are sent, the rest held back."""

    def __init__(self, port: int, method: str, path: str, auth: tuple[str, str], headers: dict[str, str],
                 body: bytes, sent: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Basic {token}",
                 f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body[:sent])
        self.rest = body[sent:]

    def finish(self) -> int:
        """Send the rest; the status code of the answer."""
        self.sock.sendall(self.rest)
        return self.status()

    def status(self) -> int:
        data = b""
        while b"\r\n" not in data:
            more = self.sock.recv(4096)
            if not more:
                return 0
            data += more
        return int(data.split(b" ", 2)[1])

    def cut(self) -> None:
        _close(self.sock)


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# --- resume loops, one per protocol (what a careful client does) ----------------------------

RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass
class LoopStats:
    requests: int = 0
    failures: int = 0


def range_put_loop(session: requests.Session, url: str, data: bytes, part: int, *,
                   max_failures: int = 200) -> LoopStats:
    """Range PUT parts with offset queries after every failure, until complete."""
    stats = LoopStats()
    total = len(data)
    digest = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:"}
    offset = 0
    while True:
        end = min(offset + part, total) - 1
        stats.requests += 1
        try:
            r = session.put(url, data=data[offset:end + 1], timeout=30,
                            headers={"Content-Range": f"bytes {offset}-{end}/{total}", **digest})
            if r.status_code in (201, 204):
                return stats
            if r.status_code == 308:
                offset = int(r.headers["Upload-Offset"])
                continue
            assert r.status_code in (423, 409), (r.status_code, r.text)
        except RETRYABLE:
            pass
        stats.failures += 1
        assert stats.failures <= max_failures, "no progress"
        while True:  # ask the server how much it holds
            time.sleep(0.05)
            try:
                q = session.put(url, data=b"", timeout=30,
                                headers={"Content-Range": f"bytes */{total}", **digest})
            except RETRYABLE:
                stats.failures += 1
                continue
            if q.status_code in (200, 201, 204):
                return stats
            if q.status_code == 308:
                offset = int(q.headers["Upload-Offset"])
                break
            assert q.status_code == 423, (q.status_code, q.text)


def sabredav_append_loop(session: requests.Session, url: str, data: bytes, part: int, *,
                         max_failures: int = 300) -> LoopStats:
    """An empty PUT, then PATCH append parts; after a failure the size (HEAD) says where to go on."""
    stats = LoopStats()
    while True:
        try:
            r = session.put(url, data=b"", timeout=30)
            assert r.status_code in (201, 204)
            break
        except RETRYABLE:
            stats.failures += 1
    size = 0
    while size < len(data):
        stats.requests += 1
        try:
            r = session.patch(url, data=data[size:size + part], timeout=30, headers={
                "Content-Type": "application/x-sabredav-partialupdate", "X-Update-Range": "append"})
            assert r.status_code == 204, (r.status_code, r.text)
            size += min(part, len(data) - size)
            continue
        except RETRYABLE:
            stats.failures += 1
            assert stats.failures <= max_failures, "no progress"
        while True:
            try:
                h = session.head(url, timeout=30)
                size = int(h.headers["Content-Length"])
                break
            except RETRYABLE:
                stats.failures += 1
    return stats


def ietf_loop(session: requests.Session, base_url: str, path: str, data: bytes, part: int, *,
              max_failures: int = 200) -> LoopStats:
    """Careful creation, then PATCH appends; HEAD the upload resource after a failure."""
    stats = LoopStats()
    while True:
        try:
            r = session.post(base_url + path, data=b"", timeout=30, headers={
                "Upload-Complete": "?0", "Upload-Length": str(len(data)), "Upload-Draft-Interop-Version": "8",
                "Repr-Digest": f"sha-256=:{sha256_b64(data)}:"})
            assert r.status_code == 201, (r.status_code, r.text)
            location = base_url + r.headers["Location"]
            break
        except RETRYABLE:
            stats.failures += 1
    offset = 0
    while True:
        end = min(offset + part, len(data))
        last = end == len(data)
        stats.requests += 1
        try:
            r = session.patch(location, data=data[offset:end], timeout=30, headers={
                "Content-Type": "application/partial-upload", "Upload-Offset": str(offset),
                "Upload-Complete": "?1" if last else "?0"})
            if r.status_code in (201, 204) and r.headers.get("Upload-Complete") == "?1":
                return stats
            if r.status_code == 204:
                offset = int(r.headers["Upload-Offset"])
                continue
            assert r.status_code in (409, 423), (r.status_code, r.text)
        except RETRYABLE:
            pass
        stats.failures += 1
        assert stats.failures <= max_failures, "no progress"
        while True:
            try:
                h = session.head(location, timeout=30)
            except RETRYABLE:
                stats.failures += 1
                continue
            assert h.status_code == 204, h.status_code
            if h.headers["Upload-Complete"] == "?1":
                return stats
            offset = int(h.headers["Upload-Offset"])
            break
