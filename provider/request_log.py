"""The outermost WSGI layer: one log line per request, and a guard on the URL's encoding.

The line names the user, method, path, status, response bytes and duration::

    alice PUT /photos/2024/a.jpg 201 0B 0.183s

It is written when the response has been sent (or the client went away), so the
byte count and duration are what really happened.

Requests whose path is not valid UTF-8, or climbs above the root with ``..``, are
refused with 400 here: WsgiDAV would fail on the first with a 500, and on the
second it starts a 400 response without ever sending its body, so the client hangs.
So are request URIs that encode a slash (``%2F``, as Apache does by default):
cheroot keeps it as the three characters ``%2F`` inside one name, so
``PUT /%2e%2e%2fx.txt`` used to create a file named ``..%2Fx.txt``.

A response sent before the request body was read to its end (an early 401, 403,
409, ...) carries ``Connection: close``: cheroot drains an unread body only when it
has a Content-Length, so the rest of a chunked body would otherwise be parsed as
the next request on the connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from provider.internals import read_block, read_into
from provider.request_checks import has_encoded_slash

_log = logging.getLogger("davbackup.access")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class RequestLog:
    """WSGI middleware writing an access log line per request."""

    def __init__(self, app: WSGIApp, logger: logging.Logger = _log) -> None:
        self.app = app
        self.logger = logger

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        started = time.monotonic()
        raw_path = environ.get("PATH_INFO", "")  # WsgiDAV rewrites it in place
        state: dict[str, Any] = {"status": "-", "bytes": 0}

        body = _TrackedInput.wrap(environ)

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            state["status"] = status.split(" ", 1)[0]
            if body is not None and not body.exhausted:
                if not any(name.lower() == "connection" for name, _ in headers):
                    headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        try:
            problem = _path_problem(raw_path)
            if problem is None and has_encoded_slash(environ.get("REQUEST_URI", "")):
                problem = "The request path must not contain an encoded '/' (%2F)."
            if problem is not None:
                yield from _bad_request(recording_start_response, problem)
                return
            app_iter = self.app(environ, recording_start_response)
            try:
                for chunk in app_iter:
                    state["bytes"] += len(chunk)
                    yield chunk
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
        finally:
            self.logger.info(
                "%s %s %s %s %dB %.3fs",
                environ.get("wsgidav.auth.user_name") or "-",
                environ.get("REQUEST_METHOD", "-"),
                _printable(raw_path),
                state["status"],
                state["bytes"],
                time.monotonic() - started,
            )


class _TrackedInput:
    """``wsgi.input`` that knows whether the request body was read to its end.

    cheroot's body readers return short only at the end of the body, so a short or
    empty read marks it as exhausted.
    """

    def __init__(self, stream: Any, length: int | None) -> None:
        self._stream = stream
        self._length = length
        self._read = 0
        self.exhausted = length == 0

    @classmethod
    def wrap(cls, environ: Environ) -> _TrackedInput | None:
        """Install the tracker if the request has a body; return it (or None)."""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if not chunked and length <= 0:
            return None
        tracked = cls(environ["wsgi.input"], None if chunked else length)
        environ["wsgi.input"] = tracked
        return tracked

    def _seen(self, data: bytes, size: int | None) -> bytes:
        self._count(len(data), size)
        return data

    def _count(self, got: int, size: int | None) -> None:
        self._read += got
        if not got or (size is not None and 0 <= size and got < size):
            self.exhausted = True
        if self._length is not None and self._read >= self._length:
            self.exhausted = True

    def read(self, size: int | None = None) -> bytes:
        if size == 0:
            return b""
        if size is None or size < 0:  # read everything
            data = self._stream.read() if size is None else self._stream.read(size)
            self.exhausted = True
            return self._seen(data, None)
        return self._seen(self._stream.read(size), size)

    def read_block(self, size: int) -> bytes | bytearray:
        """``read(size)``, possibly as a new bytearray the caller owns (``internals.read_block``)."""
        return self._seen(read_block(self._stream, size), size)  # type: ignore[arg-type]

    def read_into(self, view: memoryview) -> int:
        """The next bytes into ``view`` (``internals.read_into``)."""
        got = read_into(self._stream, view)
        if len(view):
            self._count(got, len(view))
        return got

    def readline(self, size: int | None = None) -> bytes:
        line = self._stream.readline() if size is None else self._stream.readline(size)
        return self._seen(line, None)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def lighten_logging() -> None:
    """Make each log record cheaper to write (the server writes one per request).

    The logging HOWTO's optimizations for records whose format does not use the
    caller's source position, thread or process (davbackup's format:
    ``%(asctime)s %(levelname)s %(name)s: %(message)s``), and the time text of the
    root handlers' formatters made once per second instead of once per record.
    """
    logging._srcfile = None  # no stack walk per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if type(formatter) is logging.Formatter and formatter.datefmt is None:
            formatter.formatTime = _SecondsCache(formatter)  # type: ignore[method-assign,unused-ignore]


class _SecondsCache:
    """``Formatter.formatTime`` (default format) with the text of the current second kept."""

    def __init__(self, formatter: logging.Formatter) -> None:
        self._formatter = formatter
        self._cached: tuple[int, str] = (-1, "")  # (second, its text), swapped as one

    def __call__(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        formatter = self._formatter
        if datefmt is not None:
            return logging.Formatter.formatTime(formatter, record, datefmt)
        second = int(record.created)
        cached_second, text = self._cached
        if second != cached_second:
            text = time.strftime(formatter.default_time_format, formatter.converter(record.created))
            self._cached = (second, text)
        if formatter.default_msec_format:
            return formatter.default_msec_format % (text, record.msecs)
        return text


def _path_problem(path: str) -> str | None:
    """Why the request path is unusable, or None if it is fine.

    WSGI gives the path as latin-1 decoded bytes; they must be UTF-8, and ``..``
    segments must not climb above the root.
    """
    if path == "*":
        return None
    try:
        decoded = path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return "The request path is not valid UTF-8."
    depth = 0
    for segment in decoded.split("/"):
        if segment == "..":
            depth -= 1
            if depth < 0:
                return "The request path climbs above the root."
        elif segment not in ("", "."):
            depth += 1
    return None


def _printable(path: str) -> str:
    """The path for the log: decoded if possible, control characters escaped."""
    try:
        path = path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    if path.isprintable():
        return path
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in path)


def _bad_request(start_response: StartResponse, problem: str) -> list[bytes]:
    body = (problem + "\n").encode("utf-8")
    start_response(
        "400 Bad Request",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
