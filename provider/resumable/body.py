"""Request bodies of the resume protocols, and stopping an append that a newer request replaces.

* :class:`Body` reads an upload's ``wsgi.input`` so that every failure looks like a
  dropped connection (the core then keeps what arrived) and can be stopped by a newer
  request to the same upload (:func:`preempt`, the IETF draft's recommended handling
  of a client that resumes while its old request still runs on the server).
* A chunked body is read one transfer-coding chunk at a time
  (:func:`provider.internals.read_one_chunk`), so a body that breaks off loses at most
  the chunk in flight.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from provider.internals import chunked_source, connection_socket, read_one_chunk

Environ = dict[str, Any]

#: seconds a new request to an IETF upload waits for a preempted append to end
PREEMPT_WAIT = 15.0


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
        self._chunks = chunked_source(self._stream)
        self.count = 0

    def abort(self) -> None:
        """Stop this body: the next read fails; a read blocked on the socket returns now."""
        self._aborted = True
        sock = connection_socket(self._stream)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def read(self, n: int = -1) -> bytes:
        if self._aborted:
            raise ConnectionAbortedError("a newer request to this upload took over")
        try:
            data: bytes = read_one_chunk(self._chunks, n) if self._chunks is not None else self._stream.read(n)
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


# --- preempting a running append (draft: "terminate the previous request") ----------

_running: dict[str, Body] = {}
_running_lock = threading.Lock()
_running_changed = threading.Condition(_running_lock)


def register(sid: str, body: Body) -> None:
    """``body`` is being appended to upload ``sid`` (the first one wins; the core refuses
    a second concurrent append with ``Locked`` anyway)."""
    with _running_lock:
        _running.setdefault(sid, body)


def unregister(sid: str, body: Body) -> None:
    with _running_lock:
        if _running.get(sid) is body:
            del _running[sid]
        _running_changed.notify_all()


def preempt(sid: str, wait: float = PREEMPT_WAIT) -> None:
    """Stop an append still running for ``sid`` and wait (bounded) until it has ended.

    Callers must have checked that the request's user owns ``sid`` first."""
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
