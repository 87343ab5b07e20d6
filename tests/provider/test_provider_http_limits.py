"""What a client may send before its request reaches WebDAV (issue 8 items 3 and 4),
driven with raw sockets against a real server: request line (414), header size and
count (431), the header deadline (408), idle and slow sockets that must not starve
complete requests, TLS handshakes off the accepting thread, connection limits."""

from __future__ import annotations

import base64
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.server_fixtures import DavServer, _env, create_repository, free_port, launch

LIMITS = """
server:
  max_request_line: 2048
  max_header_bytes: 8192
  max_headers: 20
  header_timeout: 3
  max_connections_per_address: 40
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    srv = launch(tmp_path_factory.mktemp("http-limits"), config_yaml=LIMITS)
    try:
        yield srv
    finally:
        srv.stop()


def connect(server: DavServer, source: str | None = None, timeout: float = 30) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source is not None:
        sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_status(sock: socket.socket) -> int | None:
    """The status of the first response on ``sock`` (None if closed without one)."""
    data = b""
    try:
        while b"\r\n" not in data:
            piece = sock.recv(4096)
            if not piece:
                break
            data += piece
    except (ConnectionResetError, TimeoutError, socket.timeout):
        pass
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split(b" ", 2)[1])


def auth_header(server: DavServer, user: str = "alice") -> str:
    token = base64.b64encode(f"{user}:{server.password(user)}".encode()).decode()
    return f"Authorization: Basic {token}\r\n"


def exchange(server: DavServer, head: bytes) -> int | None:
    with connect(server) as sock:
        sock.sendall(head)
        return read_status(sock)


def still_serves(server: DavServer) -> None:
    response = requests.get(server.url + "/", auth=server.auth("alice"), timeout=10)
    assert response.status_code == 200


def test_request_line_too_long(server: DavServer) -> None:
    head = b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert exchange(server, head) == 414
    ok = b"GET /" + b"a" * 900 + b" HTTP/1.1\r\nHost: x\r\n" + auth_header(server).encode() + b"\r\n"
    assert exchange(server, ok) == 404
    still_serves(server)


def test_header_bytes_and_count(server: DavServer) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    assert exchange(server, big) == 431
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(25)) + b"\r\n"
    assert exchange(server, many) == 431
    fine = (b"GET / HTTP/1.1\r\nHost: x\r\n" + auth_header(server).encode()
            + b"".join(b"X-H%d: v\r\n" % i for i in range(15)) + b"\r\n")
    assert exchange(server, fine) == 200
    still_serves(server)


def test_huge_header_is_not_read_whole(server: DavServer) -> None:
    """A client sending a 64 MB header is cut off after the limit, not buffered."""
    sent = 0
    with connect(server, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        piece = b"h" * 65536
        try:
            while sent < 64 << 20:
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass
        status = read_status(sock)
    assert sent < 64 << 20 or status == 431
    assert status in (431, None)
    still_serves(server)


def test_huge_user_name_not_logged(server: DavServer) -> None:
    token = base64.b64encode(b"u" * 200_000 + b":pw").decode()
    status = exchange(server, f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n".encode())
    assert status == 431
    assert "u" * 5000 not in server.log()


def test_header_deadline_cannot_be_stretched(server: DavServer) -> None:
    """Bytes trickled every half second do not keep the header open past the deadline."""
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        status = None
        for i in range(40):
            try:
                sock.sendall(b"X-Drip-%d: v\r\n" % i)
            except OSError:
                break
            time.sleep(0.5)
            sock.setblocking(False)
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                data = None
            finally:
                sock.setblocking(True)
            if data is not None:
                status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else None
                break
    elapsed = time.monotonic() - started
    assert status == 408
    assert elapsed < 6


def test_idle_connections_do_not_starve_requests(tmp_path: Path) -> None:
    """Many sockets that send only a request line (twice the worker threads) must not
    keep a complete request waiting; they are cut off at the header deadline."""
    srv = launch(tmp_path / "starve", config_yaml="server:\n  threads: 8\n  header_timeout: 60\n")
    idle: list[socket.socket] = []
    try:
        for _ in range(16):
            sock = connect(srv)
            sock.sendall(b"GET / HTTP/1.1\r\n")
            idle.append(sock)
        time.sleep(0.5)
        started = time.monotonic()
        for _ in range(5):
            response = requests.get(srv.url + "/", auth=srv.auth("alice"), timeout=20)
            assert response.status_code == 200
        assert time.monotonic() - started < 15  # far below the header deadline (60 s)
        with srv.session("bob") as bob:
            assert bob.put(srv.url + "/after.txt", data=b"x", timeout=20).status_code == 201
    finally:
        for sock in idle:
            sock.close()
        srv.stop()


def test_connections_per_address(tmp_path: Path) -> None:
    srv = launch(tmp_path / "per-address",
                 config_yaml="server:\n  max_connections_per_address: 4\n  header_timeout: 30\n")
    held: list[socket.socket] = []
    try:
        statuses = []
        for _ in range(7):  # admitted ones stay silent (None), the others get 503
            sock = connect(srv, timeout=1.5)
            held.append(sock)
            statuses.append(read_status(sock))
        first_refused = statuses.index(503)
        # 4 admitted (3 if the readiness probe's connection was not closed yet)
        assert first_refused in (3, 4), statuses
        assert statuses[first_refused:] == [503] * (7 - first_refused), statuses
        # another address is not affected
        with connect(srv, source="127.0.0.2") as other:
            other.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{auth_header(srv)}\r\n".encode())
            assert read_status(other) == 200
        for sock in held:
            sock.close()
        held.clear()
        time.sleep(0.5)
        still_serves(srv)
    finally:
        for sock in held:
            sock.close()
        srv.stop()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_silent_tls_connection_does_not_block_others(tmp_path: Path) -> None:
    """The TLS handshake runs in a worker under the header deadline: a connection that
    never sends a ClientHello no longer stops the server from accepting."""
    env = _env(tmp_path)
    create_repository(tmp_path / "repo", env, {"alice": ("alice-password", "rw")})
    config = tmp_path / "serve.yaml"
    config.write_text("server:\n  header_timeout: 4\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "davbackup", "serve", "--repo", str(tmp_path / "repo"),
         "--port", str(port), "--tls-self-signed", "--config", str(config)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"https://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.options(url, verify=False, timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.3)
        started = time.monotonic()
        response = requests.get(url, auth=("alice", "alice-password"), verify=False, timeout=20)
        assert response.status_code == 200
        assert time.monotonic() - started < 10  # was: blocked for socket_timeout (300 s)
        # plain HTTP on the TLS port gets a plain 400
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 400
        # a handshake that completes but is followed by nothing is cut off too
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with context.wrap_socket(raw) as tls:
                tls.settimeout(15)
                started = time.monotonic()
                try:
                    data = tls.recv(100)
                except (OSError, ssl.SSLError):
                    data = b""
                assert data == b""
                assert time.monotonic() - started < 8
        for sock in silent:  # closed by the server at the deadline
            sock.settimeout(10)
            try:
                assert sock.recv(10) == b""
            except ConnectionResetError:
                pass
            sock.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_limits_in_example_config() -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "davbackup.example.yaml").read_text()
    for key in ("threads: 32", "max_request_line: 8192", "max_header_bytes: 65536",
                "max_headers: 100", "header_timeout: 10", "slow_header_workers: 0",
                "max_connections: 1024", "max_connections_per_address: 256"):
        assert key in text


def test_parallel_clients_unaffected(server: DavServer) -> None:
    """Many complete requests at once from one address all succeed."""
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with server.session("alice") as session:
                for _ in range(5):
                    assert session.get(server.url + "/", timeout=30).status_code == 200
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _read_response(sock: socket.socket, buffer: bytearray, *,
                   head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body by Content-Length; none for a HEAD) from
    ``sock``; bytes of later responses stay in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        piece = sock.recv(65536)
        assert piece, f"connection closed; received {bytes(buffer)!r}"
        buffer += piece
    header, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    del buffer[: len(header) + 4]
    lines = header.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    status = int(lines[0].split(" ", 2)[1])
    if head or status in (100, 304):
        length = 0
    while len(buffer) < length:
        piece = sock.recv(65536)
        assert piece, "connection closed inside a body"
        buffer += piece
    body = bytes(buffer[:length])
    del buffer[:length]
    return status, headers, body


def test_keep_alive_sequences_answer_every_request_whole(server: DavServer) -> None:
    """One connection, as clients use it: answers whose header waits for the first block
    of the body (and goes out alone when there is none), requests that arrive at once
    (pipelined), after a pause (the connection went back to the selector), and a PUT
    that waits for ``100 Continue`` before it sends its body."""
    auth = auth_header(server)
    path = "/keep-alive-seq.bin"
    body = bytes(range(256)) * 40
    with connect(server, timeout=10) as sock:
        buffer = bytearray()
        sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {len(body)}\r\n"
                      "Expect: 100-continue\r\n\r\n").encode())
        status, _, _ = _read_response(sock, buffer)  # no body is sent before this
        assert status == 100
        sock.sendall(body)
        assert _read_response(sock, buffer)[0] == 201
        get = f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
        head = f"HEAD {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
        sock.sendall(get + head + get)  # pipelined
        status, headers, got = _read_response(sock, buffer)
        assert (status, got) == (200, body)
        status, headers, _ = _read_response(sock, buffer, head=True)
        assert status == 200 and headers["content-length"] == str(len(body))
        status, _, got = _read_response(sock, buffer)  # a HEAD answer has no body
        assert (status, got) == (200, body)
        for pause in (0.0, 0.05, 0.3):
            time.sleep(pause)
            sock.sendall(get)
            status, _, got = _read_response(sock, buffer)
            assert (status, got) == (200, body), pause
        sock.sendall(f"DELETE {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        assert _read_response(sock, buffer)[0] == 204
        sock.sendall(get)
        assert _read_response(sock, buffer)[0] == 404
        assert not buffer
