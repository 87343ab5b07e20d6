"""The I/O side of the resume protocols: request bodies, responses, request bookkeeping.

* :class:`Body` reads an upload's ``wsgi.input`` so that every failure looks like a
  dropped connection (the core then keeps what arrived) and can be stopped by a newer
  request to the same upload (:func:`preempt`, the IETF draft's recommended handling
  of a client that resumes while its old request still runs on the server).
* :data:`RECENT` remembers uploads that completed in the last hour, so a client that
  lost the final answer learns that its upload is complete.
* :func:`respond` and :func:`problem` write plain and RFC 9457 problem answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable

from cheroot.server import ChunkedRFile
from wsgidav import util

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]

PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"
#: seconds a new request to an IETF upload waits for a preempted append to end
PREEMPT_WAIT = 15.0
RECENT_TTL = 3600.0
RECENT_MAX = 4096


class Body:
    """``wsgi.input`` for an append: any read failure looks like a dropped connection.

    The core keeps what arrived when a read raises ``OSError``; WsgiDAV's and the
    request server's wrappers would turn it into an error that discards it. With
    ``strict`` (SabreDAV PATCH), a short body is reported by the core itself.
    """

    def __init__(self, environ: Environ, length: int | None, *, strict: bool = False) -> None:
        self._environ = environ
        self._stream = environ["wsgi.input"]
        self._length = length
        self._strict = strict
        self._aborted = False
        self._eof = False
        self._chunks = _chunked_source(self._stream)
        self.count = 0

    def abort(self) -> None:
        """Stop this body: the next read fails; a read blocked on the socket returns now."""
        self._aborted = True
        sock = _find_socket(self._stream)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def read(self, n: int = -1) -> bytes:
        if self._aborted:
            raise ConnectionAbortedError("a newer request to this upload took over")
        try:
            data = self._read_chunk(n) if self._chunks is not None else self._stream.read(n)
        except Exception as exc:  # noqa: BLE001 - every failure means "the body broke off"
            if self._strict:
                return b""
            raise ConnectionError(f"request body broke off: {exc}") from exc
        self.count += len(data)
        if data:
            self._environ["wsgidav.some_input_read"] = 1
        elif n != 0:
            self._eof = True  # the body ended cleanly (a chunked body's last chunk)
        return data

    def _read_chunk(self, n: int) -> bytes:
        """At most one transfer-coding chunk: cheroot's own ``read(n)`` collects several
        and loses them all when the body breaks off in the next one."""
        source = self._chunks
        if not source.buffer:
            source._fetch()
        take = len(source.buffer) if n is None or n < 0 else n
        data, source.buffer = source.buffer[:take], source.buffer[take:]
        return data

    def finish(self) -> None:
        """Mark the input consumed when all of it was read, so the connection stays open.

        Otherwise WsgiDAV answers with ``Connection: close``, which is always safe.
        """
        done = self._eof
        if not done and self._length is not None and self.count == self._length:
            chunked = "chunked" in self._environ.get("HTTP_TRANSFER_ENCODING", "").lower()
            try:
                done = not chunked or self.read(1) == b""
            except OSError:
                done = False
        if done:
            self._environ["wsgidav.all_input_read"] = 1


def _chunked_source(stream: Any) -> ChunkedRFile | None:
    """cheroot's ``ChunkedRFile`` behind ``wsgi.input`` and its wrappers, or None.

    The wrappers of the request server and the request log keep the stream they wrap
    in ``_stream``; it is looked up in the instance dict, not with ``getattr``, because
    they forward unknown attributes to the wrapped stream.
    """
    for _ in range(4):
        if isinstance(stream, ChunkedRFile):
            return stream
        stream = vars(stream).get("_stream") if hasattr(stream, "__dict__") else None
        if stream is None:
            return None
    return None


def _find_socket(stream: Any, depth: int = 6) -> socket.socket | None:
    """The connection's socket behind cheroot's ``wsgi.input`` (and the request server's
    wrapper), found through the attributes cheroot uses; None if the layout differs."""
    for _ in range(depth):
        if isinstance(stream, socket.socket):
            return stream
        stream = next((getattr(stream, name) for name in ("_stream", "rfile", "raw", "_sock")
                       if getattr(stream, name, None) is not None), None)
        if stream is None:
            return None
    return stream if isinstance(stream, socket.socket) else None


# --- preempting a running append (draft: "terminate the previous request") ----------

_running: dict[str, "Body"] = {}
_running_lock = threading.Lock()
_running_changed = threading.Condition(_running_lock)


def register(sid: str, body: "Body") -> None:
    """``body`` is being appended to upload ``sid`` (the first one wins; the core refuses
    a second concurrent append with ``Locked`` anyway)."""
    with _running_lock:
        _running.setdefault(sid, body)


def unregister(sid: str, body: "Body") -> None:
    with _running_lock:
        if _running.get(sid) is body:
            del _running[sid]
        _running_changed.notify_all()


def preempt(sid: str, wait: float = PREEMPT_WAIT) -> None:
    """Stop an append still running for ``sid`` and wait (bounded) until it has ended."""
    deadline = time.monotonic() + wait
    with _running_lock:
        body = _running.get(sid)
        if body is None:
            return
        body.abort()
        while _running.get(sid) is body:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            _running_changed.wait(left)


def wait_idle(sid: str, wait: float) -> None:
    """Wait (bounded) until no append runs for ``sid``: an offset query then answers
    with what the finished request stored, not with an older checkpoint."""
    deadline = time.monotonic() + wait
    with _running_lock:
        while sid in _running:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            _running_changed.wait(left)


def respond(start_response: StartResponse, status: int, headers: Headers, text: str = "",
             *, head: bool = False) -> list[bytes]:
    body = b"" if head or status in (204, 304) else text.encode("utf-8")
    phrase = "Resume Incomplete" if status == 308 else HTTPStatus(status).phrase
    all_headers = list(headers)
    if status not in (204, 304):
        all_headers.append(("Content-Length", str(len(text.encode("utf-8")) if head else len(body))))
        if body:
            all_headers.append(("Content-Type", "text/plain; charset=utf-8"))
    else:
        all_headers.append(("Content-Length", "0"))
    all_headers.append(("Date", util.get_rfc1123_time()))
    start_response(f"{status} {phrase}", all_headers)
    return [body]


def problem(start_response: StartResponse, status: int, kind: str, title: str,
             headers: Headers | None = None, members: dict | None = None) -> list[bytes]:
    kind = kind if ":" in kind else PROBLEM_BASE + kind
    doc = {"type": kind, "title": title, **(members or {})}
    body = json.dumps(doc).encode("utf-8")
    all_headers = list(headers or []) + [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(len(body))),
        ("Date", util.get_rfc1123_time()),
    ]
    start_response(f"{status} {HTTPStatus(status).phrase}", all_headers)
    return [body]


@dataclass(frozen=True)
class Done:
    size: int
    etag: str
    sha256: str | None = None  # base64, when the client sent Repr-Digest at the start


class _Recent:
    """Completed uploads of the last hour, in this process only (bounded)."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, ...], tuple[float, Done]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: tuple[str, ...], done: Done) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), done)
            self._items.move_to_end(key)
            while len(self._items) > RECENT_MAX:
                self._items.popitem(last=False)

    def lookup(self, key: tuple[str, ...]) -> Done | None:
        with self._lock:
            item = self._items.get(key)
        if item is None or time.monotonic() - item[0] > RECENT_TTL:
            return None
        return item[1]


RECENT = _Recent()
