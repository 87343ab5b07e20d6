"""Resumable uploads over HTTP: range PUT, SabreDAV PATCH and IETF resumable uploads.

WsgiDAV refuses ``Content-Range`` on PUT and answers PATCH with 405, so the request
server hands these requests to :func:`dispatch` before WsgiDAV sees them. Sessions,
chunk bookkeeping and the state machine live in the core (:mod:`davbackup.uploads`,
``Namespace.patch``); this package only speaks HTTP. Every handler takes the request
server (``server``, a ``DavBackupRequestServer``) so that ``If``/``If-Match`` headers
and WebDAV locks are checked exactly as WsgiDAV's own PUT checks them (through
:mod:`provider.internals`).

One module per protocol, each with its answers written down at the top:

``range_put``  ``PUT`` + ``Content-Range: bytes S-E/T`` (the primary protocol)
``sabredav``   ``PATCH`` + ``X-Update-Range`` (SabreDAV partial update)
``ietf``       draft-ietf-httpbis-resumable-upload (upload resources under
               ``/.well-known/davbackup-uploads/``)

and what they share:

``errors``     the one table from core exceptions to status, error element, headers
``headers``    request header parsers (no I/O)
``body``       request bodies that survive a dropped connection; preemption
``answers``    plain and RFC 9457 problem answers; recently completed uploads
``common``     constants, the checks of WsgiDAV's PUT, finishing an upload

Limits (``uploads.*`` in the configuration): an upload may declare at most
``max_length`` bytes (413 above), and a user may hold at most
``max_sessions_per_user`` open uploads (429 for one more).

The reserved prefix ``/.well-known/davbackup-uploads`` of every user's namespace
holds only upload resources: writes of files or folders there are refused (403).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError

from davbackup.errors import DavBackupError
from provider.internals import dav_provider
from provider.paths import normalize_path
from provider.resumable.answers import Headers, StartResponse, respond
from provider.resumable.common import (
    ACCEPT_PATCH,
    PARTIAL_UPLOAD_TYPE,
    SABRE_TYPE,
    UPLOAD_PREFIX,
    Environ,
    is_reserved,
    media_type,
)
from provider.resumable.headers import parse_sf_boolean
from provider.resumable.ietf import ietf_create, upload_resource
from provider.resumable.range_put import range_put
from provider.resumable.sabredav import sabredav_patch

__all__ = ["ACCEPT_PATCH", "UPLOAD_PREFIX", "after_whole_put", "dav_header_extra", "discard_sessions", "dispatch",
           "is_reserved"]

_log = logging.getLogger(__name__)


def dav_header_extra() -> str:
    """The compliance class to add to the ``DAV`` header of OPTIONS answers."""
    return "sabredav-partialupdate"


def dispatch(server: Any, environ: Environ, start_response: StartResponse) -> Iterable[bytes] | None:
    """Answer the request if it belongs to a resume protocol; None lets WsgiDAV answer."""
    method = environ["REQUEST_METHOD"]
    path = environ["PATH_INFO"]
    environ["wsgidav.user_name"] = environ.get("wsgidav.auth.user_name", "anonymous")

    if is_reserved(path):
        return upload_resource(server, environ, start_response, method, path)
    if method in ("COPY", "MOVE") and _destination_reserved(environ):
        raise DAVError(HTTP_FORBIDDEN, f"{UPLOAD_PREFIX} is reserved for upload resources")
    if method == "OPTIONS":
        return server.do_OPTIONS(environ, _with_resume_headers(start_response))
    upload_complete = parse_sf_boolean(environ.get("HTTP_UPLOAD_COMPLETE"))
    if method == "PUT":
        if "HTTP_CONTENT_RANGE" in environ:
            return range_put(server, environ, start_response)
        if upload_complete is not None:
            return ietf_create(server, environ, start_response, upload_complete)
        return None
    if method == "PATCH":
        if media_type(environ) == SABRE_TYPE:
            return sabredav_patch(server, environ, start_response)
        if upload_complete is not None:
            return ietf_create(server, environ, start_response, upload_complete)
        return respond(start_response, 415, [("Accept-Patch", ACCEPT_PATCH)],
                       f"PATCH needs Content-Type {SABRE_TYPE} (or {PARTIAL_UPLOAD_TYPE} on an upload resource)\n")
    if method == "POST" and upload_complete is not None:
        return ietf_create(server, environ, start_response, upload_complete)
    return None


def after_whole_put(server: Any, environ: Environ) -> None:
    """After a successful plain PUT: the new whole file supersedes every session for it."""
    provider = dav_provider(server)
    discard_sessions(provider, provider.user_name(environ), normalize_path(environ["PATH_INFO"]))


def discard_sessions(provider: Any, user: str, path: str) -> None:
    """Drop every upload session of ``user`` for ``path`` (logged, never an error)."""
    try:
        dropped = provider.repo.uploads.discard_path(user, path)
    except DavBackupError as exc:  # the PUT itself succeeded; never fail it here
        _log.warning("PUT %s: could not drop its upload sessions: %s", path, exc.message)
        return
    if dropped:
        _log.info("PUT %s superseded %d upload session(s)", path, dropped)


def _destination_reserved(environ: Environ) -> bool:
    dest = environ.get("HTTP_DESTINATION")
    if not dest:
        return False
    path = unquote(urlsplit(dest).path)  # urlparse would cut a ';...' suffix off
    script = environ.get("SCRIPT_NAME", "")
    if script and path.startswith(script):
        path = path[len(script):]
    return is_reserved(path or "/")


def _with_resume_headers(start_response: StartResponse) -> StartResponse:
    """OPTIONS: advertise PATCH, the partial-update class and both PATCH media types."""

    def wrapped(status: str, headers: Headers, exc_info: Any = None) -> Any:
        out: Headers = []
        for name, value in headers:
            lower = name.lower()
            if lower == "dav":
                parts = [p.strip() for p in value.split(",") if p.strip()]
                value = ", ".join(parts + [dav_header_extra()])
            elif lower == "allow":
                methods = [m.strip() for m in value.split(",")]
                if "PUT" in methods and "PATCH" not in methods:
                    value = ", ".join(methods + ["PATCH"])
            out.append((name, value))
        if status.startswith("200"):
            out.append(("Accept-Patch", ACCEPT_PATCH))
        return start_response(status, out, exc_info)

    return wrapped
