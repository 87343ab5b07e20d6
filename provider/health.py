"""The health check for load balancers: ``GET /.well-known/davbackup-health``.

It needs no credentials and reveals nothing: the answer is ``200 ok`` while the
catalog answers a trivial query, ``503 unavailable`` otherwise, with no version,
no user and no path in it. Only GET and HEAD are answered (405 otherwise). It sits
outside the access log, so a probe every few seconds does not flood it; failures
are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from davbackup.service import DavService

_log = logging.getLogger(__name__)

HEALTH_PATH = "/.well-known/davbackup-health"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class HealthCheck:
    """WSGI middleware answering the health path itself."""

    def __init__(self, app: WSGIApp, repo: DavService) -> None:
        self.app = app
        self.repo = repo

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in (HEALTH_PATH, HEALTH_PATH + "/"):
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "")
        if method not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", b"", [("Allow", "GET, HEAD")])
        status, body = "200 OK", b"ok\n"
        try:
            self.repo.catalog.reader().execute("SELECT 1").fetchone()
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            _log.exception("health check: the catalog does not answer")
            status, body = "503 Service Unavailable", b"unavailable\n"
        return _answer(start_response, status, b"" if method == "HEAD" else body,
                       [], length=len(body))


def _answer(start_response: StartResponse, status: str, body: bytes,
            extra: list[tuple[str, str]], length: int | None = None) -> list[bytes]:
    start_response(status, [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body) if length is None else length)),
        ("Cache-Control", "no-store"),
        *extra,
    ])
    return [body]
