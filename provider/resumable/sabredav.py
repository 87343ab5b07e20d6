"""SabreDAV partial update: ``PATCH`` with ``X-Update-Range`` (no session: each request
is one atomic new version).

``Content-Type: application/x-sabredav-partialupdate`` and ``X-Update-Range:
bytes=S-E | bytes=S- | bytes=-K | append`` (``-K``: the last K bytes are replaced,
i.e. the body is written at size-K). 204 + ETag; 404 no such file; 405 a collection;
400 bad or missing X-Update-Range; 415 other content type; 411 no Content-Length;
416 range and length disagree, or the range starts beyond the end; 409 the file
changed during the request. A body that breaks off changes nothing (400). Errors of
the core are answered by :mod:`provider.resumable.errors`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from davbackup.errors import DavBackupError
from provider.internals import check_write_permission, dav_provider, evaluate_if_headers, write_transaction
from provider.paths import normalize_path
from provider.resumable.answers import StartResponse, respond
from provider.resumable.body import Body
from provider.resumable.common import Environ, content_length, has_content_length
from provider.resumable.errors import answer_error
from provider.resumable.headers import UpdateRange, parse_update_range

COLLECTION_ALLOW = "OPTIONS, HEAD, GET, PROPFIND, DELETE, COPY, MOVE"


def sabredav_patch(server: Any, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    provider = dav_provider(server)
    path = normalize_path(environ["PATH_INFO"])
    res = provider.get_resource_inst(path, environ)
    if res is None:
        return respond(start_response, 404, [], f"{path}: no such file\n")
    if res.is_collection:
        return respond(start_response, 405, [("Allow", COLLECTION_ALLOW)], "a collection cannot be patched\n")
    urange = parse_update_range(environ.get("HTTP_X_UPDATE_RANGE", ""))
    if urange is None:
        return respond(start_response, 400, [], "missing or malformed X-Update-Range\n")
    if not has_content_length(environ):
        return respond(start_response, 411, [], "PATCH needs a Content-Length\n")
    length = content_length(environ) or 0
    size = res.get_content_length()
    if urange.kind == "range" and (urange.last < urange.first or urange.last - urange.first + 1 != length):
        return respond(start_response, 416, [], "X-Update-Range and Content-Length disagree\n")
    start = _start(urange, size)
    if start is not None and start > size:
        return respond(start_response, 416, [("Content-Range", f"bytes */{size}")],
                       f"the range starts beyond the end of the file ({size} bytes)\n")
    evaluate_if_headers(server, res, environ)
    check_write_permission(server, res, "0", environ)
    ns = provider.namespace(environ)
    try:
        with write_transaction(server, res, environ):
            entry = ns.patch(path, start, Body(environ, length, strict=True), length)
    except DavBackupError as exc:
        return answer_error(start_response, exc)
    environ["wsgidav.all_input_read"] = 1
    provider.forget(environ)
    return respond(start_response, 204, [("ETag", f'"{entry.etag}"')])


def _start(urange: UpdateRange, size: int) -> int | None:
    """Where the body goes (None: appended); above ``size`` when it cannot fit."""
    if urange.kind == "append":
        return None
    if urange.kind in ("range", "from"):
        return urange.first
    return size - urange.first if urange.first <= size else size + 1  # suffix longer than the file
