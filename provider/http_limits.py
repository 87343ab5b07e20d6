"""Limits on what a client may send before the application sees its request (cheroot).

cheroot reads a request line and its headers in a worker thread, with no limit on
their size or number, and with ``timeout`` applying to each socket read, so a client
that drips one byte every few seconds keeps a worker forever; with TLS it even does
the handshake in the thread that accepts connections, so one silent TCP connection
stopped all new ones for ``socket_timeout``. :class:`LimitedConnection` and
:class:`LimitedRequest` (installed by :func:`install`) add, all configurable
(:class:`HttpLimits`, section ``server`` of the config file):

* a request line longer than ``max_request_line`` bytes: ``414``;
* more than ``max_header_bytes`` bytes or ``max_headers`` lines of headers: ``431``;
  either way the connection is closed and nothing beyond the limit is read;
* a deadline, ``header_timeout`` seconds, for the TLS handshake, request line and
  headers together, from when a worker takes the connection: a watchdog thread
  answers ``408`` (plain HTTP) and shuts the socket down, which wakes the worker
  blocked in ``recv``. A new connection that has sent nothing at all within
  ``header_timeout`` of its accept is closed the same way (one that has sent
  something but waits for a busy worker is left alone);
* worker threads cannot all be held by slow senders: a request whose complete
  header is already buffered when a worker picks it up (every normal client) is
  read at once; one that is not yet complete needs one of ``slow_header_workers``
  slots (default: half the threads) and gets ``header_timeout``; without a free slot
  it gets only ``slow_header_grace`` seconds (TLS connections always take this
  path, the handshake included: their bytes cannot be inspected before decryption).
  Idle sockets therefore hold at most the slots plus short-lived graces, and
  complete requests always find a worker;
* at most ``max_connections`` open connections, ``max_connections_per_address`` of
  them from one address (IPv6: one /64); more are answered ``503`` and closed.

A deployment that faces the Internet should still put a reverse proxy that buffers
request headers in front (SECURITY.md): these limits stop one client from starving
the others, not a distributed flood.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from cheroot.server import HTTPConnection, HTTPRequest
from cheroot.ssl.builtin import BuiltinSSLAdapter

from provider.socket_writer import SocketWriter

_log = logging.getLogger(__name__)

CRLF = b"\r\n"


@dataclass(frozen=True)
class HttpLimits:
    """What a client may send before its request reaches the application."""

    max_request_line: int = 8192
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    #: workers that may wait for an incomplete header at once (0: half the threads)
    slow_header_workers: int = 0
    slow_header_grace: float = 1.0
    max_connections: int = 1024
    max_connections_per_address: int = 256


class _LineTooLong(Exception):
    pass


class _HeadersTooLarge(Exception):
    pass


class _HeaderInput:
    """``rfile`` for the request line and headers: counts bytes and lines."""

    def __init__(self, rfile: Any, limits: HttpLimits) -> None:
        self.rfile = rfile
        self.limits = limits
        self.in_headers = False
        self.line_bytes = 0
        self.header_bytes = 0
        self.header_lines = 0

    def readline(self, size: int | None = None) -> bytes:
        if self.in_headers:
            self.header_lines += 1
            if self.header_lines > self.limits.max_headers + 1:  # + the empty line
                raise _HeadersTooLarge(f"more than {self.limits.max_headers} header lines")
        parts = []
        while True:  # in pieces, so that a 200 MB line is never read whole
            piece = self.rfile.readline(256)
            self._count(len(piece))
            parts.append(piece)
            if len(piece) < 256 or piece.endswith(b"\n"):
                return b"".join(parts)

    def read(self, size: int = -1) -> bytes:
        data = self.rfile.read(size)
        self._count(len(data))
        return data

    def _count(self, n: int) -> None:
        if self.in_headers:
            self.header_bytes += n
            if self.header_bytes > self.limits.max_header_bytes:
                raise _HeadersTooLarge(f"headers larger than {self.limits.max_header_bytes} bytes")
        else:
            self.line_bytes += n
            if self.line_bytes > self.limits.max_request_line:
                raise _LineTooLong(f"request line longer than {self.limits.max_request_line} bytes")


class ConnectionGuard:
    """Shared state of the limits: connection counts, slow-header slots, deadlines."""

    def __init__(self, limits: HttpLimits, threads: int) -> None:
        self.limits = limits
        self.slow_slots = limits.slow_header_workers or max(1, threads // 2)
        self._mutex = threading.Lock()
        self._open = 0
        self._per_address: dict[str, int] = {}
        self._slow = 0
        self._deadlines: dict[int, tuple[float, LimitedConnection]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- connections ------------------------------------------------------------

    def admit(self, address: str) -> bool:
        """Count a new connection; False if it exceeds a limit (it is not counted)."""
        with self._mutex:
            if self._open >= self.limits.max_connections:
                return False
            if self._per_address.get(address, 0) >= self.limits.max_connections_per_address:
                return False
            self._open += 1
            self._per_address[address] = self._per_address.get(address, 0) + 1
            return True

    def closed(self, address: str) -> None:
        with self._mutex:
            self._open -= 1
            left = self._per_address.get(address, 0) - 1
            if left > 0:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)

    # --- slow headers -------------------------------------------------------------

    def take_slow_slot(self) -> bool:
        with self._mutex:
            if self._slow >= self.slow_slots:
                return False
            self._slow += 1
            return True

    def release_slow_slot(self) -> None:
        with self._mutex:
            self._slow -= 1

    # --- deadlines ------------------------------------------------------------------

    def arm(self, conn: LimitedConnection, seconds: float) -> None:
        with self._mutex:
            self._deadlines[id(conn)] = (time.monotonic() + seconds, conn)
        self._ensure_watchdog()

    def disarm(self, conn: LimitedConnection) -> None:
        with self._mutex:
            self._deadlines.pop(id(conn), None)

    def _ensure_watchdog(self) -> None:
        if self._thread is None:
            with self._mutex:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._watch, name="header-watchdog", daemon=True
                    )
                    self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._mutex:  # held while acting, so that after disarm() nothing fires
                expired = [(key, conn) for key, (due, conn) in self._deadlines.items() if due <= now]
                for key, conn in expired:
                    del self._deadlines[key]
                    conn.header_deadline_passed()

    def stop(self) -> None:
        self._stop.set()


def address_key(address: Any) -> str:
    """The unit connections are counted in: the IPv4 address, or the IPv6 /64."""
    return _address_key(str(address or "?"))


@functools.lru_cache(maxsize=4096)
def _address_key(text: str) -> str:  # parsed once per address: every login attempt asks
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LimitedRequest(HTTPRequest):
    """cheroot's request with size, count and time limits on the header."""

    def send_headers(self) -> None:
        """The header is sent with the first block of the body (one send for a small answer)."""
        self.conn.wfile.hold_next()
        super().send_headers()

    def respond(self) -> None:
        try:
            super().respond()
        finally:
            self.conn.wfile.flush()

    def parse_request(self) -> None:
        conn: LimitedConnection = self.conn
        guard: ConnectionGuard = self.server.davbackup_guard
        limits = guard.limits
        slot = False
        if conn.is_tls or not conn.header_buffered():
            slot = guard.take_slow_slot()
        budget = limits.header_timeout if (slot or not conn.is_tls and conn.header_complete) \
            else limits.slow_header_grace
        conn.in_parse = True
        guard.arm(conn, budget)
        conn.requests_started += 1
        self.rfile = _HeaderInput(conn.rfile, limits)
        try:
            if not conn.handshake():
                return
            if not self.read_request_line():
                return
            self.rfile.in_headers = True
            if not self.read_request_headers():
                return
        except _LineTooLong as exc:
            self._refuse_header("414 URI Too Long", f"{exc}.")
            return
        except _HeadersTooLarge as exc:
            self._refuse_header("431 Request Header Fields Too Large", f"{exc}.")
            return
        finally:
            guard.disarm(conn)
            conn.in_parse = False
            if slot:
                guard.release_slow_slot()
            if conn.timed_out:
                self.close_connection = True
        if conn.timed_out:
            return
        self.ready = True

    def _refuse_header(self, status: str, message: str) -> None:
        """Answer and close; read on a little first, so that closing with unread input
        does not reset the connection before the client has read the answer."""
        self.close_connection = True
        self.simple_response(status, message)
        self.conn.drain()


class LimitedConnection(HTTPConnection):
    """cheroot's connection, counted per address, with a deferred TLS handshake."""

    RequestHandlerClass = LimitedRequest

    def __init__(self, server: Any, sock: Any, makefile: Any = None) -> None:
        if makefile is None:
            super().__init__(server, sock)
        else:
            super().__init__(server, sock, makefile)
        self.wfile = SocketWriter(sock, self.wbufsize)  # answers without cheroot's copies
        self.guard: ConnectionGuard = server.davbackup_guard
        self.is_tls = isinstance(sock, ssl.SSLSocket)
        self.handshaken = not self.is_tls
        self.requests_started = 0
        self.in_parse = False
        self.timed_out = False
        self.header_complete = False
        try:  # an exception here would end cheroot's accepting thread
            self._address = address_key(sock.getpeername()[0])
        except Exception:  # noqa: BLE001
            self._address = "?"
        self.admitted = self.guard.admit(self._address)
        if not self.admitted:
            # Answer at once; the watchdog shuts the socket a moment later, which
            # wakes the selector, and a worker closes it.
            self._refuse()
            self.guard.arm(self, 1.0)
        else:
            self.guard.arm(self, self.guard.limits.header_timeout)  # until the first request

    def communicate(self) -> bool:
        self.guard.disarm(self)
        if not self.admitted:
            return False
        return bool(super().communicate())

    def drain(self, limit: int = 1 << 20, seconds: float = 1.0) -> None:
        """Read and drop up to ``limit`` bytes of unread input for up to ``seconds``."""
        deadline = time.monotonic() + seconds
        try:
            self.wfile.flush()
            socket.socket.shutdown(self.socket, socket.SHUT_WR)
            while limit > 0 and time.monotonic() < deadline:
                self.socket.settimeout(max(0.05, deadline - time.monotonic()))
                data = self.socket.recv(65536)
                if not data:
                    break
                limit -= len(data)
        except (OSError, ValueError):
            pass

    def handshake(self) -> bool:
        """Finish a TLS handshake (deferred from the acceptor thread); False on failure."""
        if self.handshaken:
            return True
        try:
            self.socket.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            _log.debug("TLS handshake with %s failed: %s", self._address, exc)
            if isinstance(exc, ssl.SSLError) and "http request" in str(exc).lower():
                body = b"This server speaks HTTPS only.\n"
                try:  # plain text on the raw socket, as cheroot does
                    socket.socket.send(
                        self.socket,
                        b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                        b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body),
                    )
                except OSError:
                    pass
            return False
        self.handshaken = True
        return True

    def header_buffered(self) -> bool:
        """Whether a complete request header is already waiting (plain HTTP only).

        The worker got this connection because it is readable, so one peek does not
        block.
        """
        self.header_complete = False
        try:
            data = self.rfile.peek(1)
        except (OSError, ValueError):
            return False
        self.header_complete = b"\r\n\r\n" in data
        return self.header_complete

    def header_deadline_passed(self) -> None:
        """Called by the watchdog: answer 408 (plain HTTP) and wake the worker.

        A new connection whose bytes are waiting but that no worker has picked up
        yet (all busy with long requests) is spared: the worker that takes it sets
        its own deadline.
        """
        if self.admitted and not self.in_parse and self._bytes_waiting():
            return
        self.timed_out = True
        if self.admitted and not self.is_tls:
            try:
                self.socket.send(
                    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                    b"Content-Length: 0\r\n\r\n", socket.MSG_DONTWAIT,
                )
            except OSError:
                pass
        _shutdown(self.socket)

    def _bytes_waiting(self) -> bool:
        try:
            return bool(socket.socket.recv(self.socket, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False

    def _refuse(self) -> None:
        if self.is_tls:
            return
        try:
            self.socket.send(
                b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
                b"Content-Length: 0\r\n\r\n", socket.MSG_DONTWAIT,
            )
            socket.socket.shutdown(self.socket, socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.guard.disarm(self)
        if self.admitted:
            self.admitted = False
            self.guard.closed(self._address)
        super().close()


def _shutdown(sock: Any) -> None:
    try:  # the plain socket call, also for SSL sockets (it leaves the SSL state alone)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class DeferredHandshakeAdapter(BuiltinSSLAdapter):
    """TLS whose handshake happens in the worker (under the header deadline), not in
    the thread that accepts connections."""

    def wrap(self, sock: Any) -> tuple[Any, dict[str, str]]:
        wrapped = self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True)
        return wrapped, {"wsgi.url_scheme": "https", "HTTPS": "on"}


def guard_of(server: Any) -> ConnectionGuard:
    """The guard :func:`install` put into ``server``."""
    guard: ConnectionGuard = server.davbackup_guard
    return guard


def install(server: Any, limits: HttpLimits, threads: int) -> ConnectionGuard:
    """Put the limits into a cheroot server (before ``prepare``)."""
    guard = ConnectionGuard(limits, threads)
    server.davbackup_guard = guard
    server.ConnectionClass = LimitedConnection
    server.keep_alive_conn_limit = limits.max_connections
    return guard
