"""Resumable uploads over HTTP: range PUT, SabreDAV PATCH and IETF resumable uploads.

WsgiDAV refuses ``Content-Range`` on PUT and answers PATCH with 405, so the request
server hands these requests to :func:`dispatch` before WsgiDAV sees them. Sessions,
chunk bookkeeping and the state machine live in the core (:mod:`davbackup.uploads`,
``Namespace.patch``); this module only speaks HTTP. Every handler takes the request
server (``server``, a ``DavBackupRequestServer``) so that ``If``/``If-Match`` headers
and WebDAV locks are checked exactly as WsgiDAV's own PUT checks them.

Range PUT (session protocol ``"range"``, one session per user and path)
------------------------------------------------------------------------
``PUT`` with ``Content-Range: bytes S-E/T`` appends bytes S..E of a T-byte file.

=====================================  ==========================================
request                                answer
=====================================  ==========================================
part, file not complete yet            ``308`` + ``Range: bytes=0-N`` (omitted while
                                       nothing is held) + ``Upload-Offset: N+1``
part that completes the file           ``201`` (new file) / ``204`` (replaced) + ETag
``bytes */T`` (or ``*/*``), no body    offset query: ``308`` as above; no session,
                                       or one for another file: ``308``, offset 0;
                                       just completed (this process, file unchanged):
                                       ``200`` + ETag + ``Upload-Offset: T``
S below the held offset (overlap)      the bytes already held are skipped
S above the held offset (gap)          ``409`` + ``Upload-Offset`` + ``Range``; nothing changes
T or Repr-Digest differs from the      ``409`` + ``Upload-Offset`` + ``Upload-Length`` (held total);
session's ("another file"), S > 0      nothing changes
another file, S = 0                    starts over: the old session is discarded
malformed / E >= T / body length       ``400`` + ``Upload-Offset``; nothing changes
differs from E-S+1
another request appends right now      ``423`` + ``Retry-After`` + ``Upload-Offset`` (an offset
                                       query waits up to 5 s for that request to end first)
whole-file digest does not match       ``400`` problem ``tag:davbackup,2026:digest-mismatch`` +
                                       ``Upload-Offset: 0``; session dropped, old version stays
=====================================  ==========================================

``T`` may be ``*`` (unknown) until the last part. A body that breaks off keeps what
arrived (the next offset query tells). A plain whole-file PUT of the path supersedes
its sessions (:func:`after_whole_put`).

SabreDAV partial update (no session: each request is one atomic new version)
----------------------------------------------------------------------------
``PATCH`` with ``Content-Type: application/x-sabredav-partialupdate`` and
``X-Update-Range: bytes=S-E | bytes=S- | bytes=-K | append`` (``-K``: the last K
bytes are replaced, i.e. the body is written at size-K). 204 + ETag; 404 no such
file; 405 a collection; 400 bad or missing X-Update-Range; 415 other content type;
411 no Content-Length; 416 range and length disagree, or the range starts beyond the
end; 409 the file changed during the request. A body that breaks off changes nothing.

IETF resumable uploads (draft-ietf-httpbis-resumable-upload, protocol ``"ietf"``)
-------------------------------------------------------------------------------
Written against the draft text of revision -12 (the newest one at hand; interop
version 8, announced since -09). ``Upload-Draft-Interop-Version`` is accepted but
not required: a final RFC will not have it.
Creation: ``POST``/``PUT``/``PATCH`` of the target path with ``Upload-Complete:
?0|?1`` (optional ``Upload-Length``) → ``201`` + ``Location:
/.well-known/davbackup-uploads/<id>`` + ``Upload-Offset`` + ``Upload-Limit``, or
the final 201/204 + ETag + ``Upload-Complete: ?1`` if the request completed it.
``HEAD <upload>`` → 204 + ``Upload-Offset``, ``Upload-Complete``, ``Upload-Length``
(when known), ``Upload-Limit: max-age=…``, ``Cache-Control: no-store``.
``PATCH <upload>`` (``Content-Type: application/partial-upload``, ``Upload-Offset``,
``Upload-Complete``) → 204 + ``Upload-Complete: ?0`` + ``Upload-Offset``, or on
completion 201/204 + ETag + ``Upload-Complete: ?1``; a wrong offset → 409 with
``Upload-Offset`` and the ``mismatching-upload-offset`` problem; inconsistent
lengths → 400 ``inconsistent-upload-length``. ``DELETE <upload>`` → 204.
cheroot cannot send ``104`` interim responses, so the Location is only known from
a final response: clients should create with an empty ``Upload-Complete: ?0``
request ("careful creation") and learn the offset with HEAD after a break.
A new request to an upload resource stops a still-running append to it (the draft's
recommended concurrency handling): the old request ends as if its connection broke,
keeping what arrived. Deviation: when an upload announced its length, receiving the
last byte completes it even with ``Upload-Complete: ?0`` (the core completes on the
total); a later empty ``?1`` append to it is answered as a success.

The reserved prefix ``/.well-known/davbackup-uploads`` of every user's namespace
holds only upload resources: writes of files or folders there are refused (403).

Header parsing lives in :mod:`provider.resumable_headers` (no I/O), bodies, answers
and the bookkeeping of running and recently completed uploads in
:mod:`provider.resumable_io`.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterable
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_METHOD_NOT_ALLOWED,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)

from davbackup.errors import Conflict, DavBackupError, IncompleteBody, Locked, NotFound, RangeError
from davbackup.uploads import DigestMismatch, Digests, OffsetMismatch, UploadSession
from provider.paths import normalize_path
from provider.resources import PendingFile
from provider.resumable_headers import (
    parse_content_range,
    parse_digests,
    parse_sf_boolean,
    parse_sf_integer,
    parse_update_range,
)
from provider.resumable_io import (
    RECENT,
    Body,
    Done,
    preempt,
    problem,
    register,
    respond,
    unregister,
    wait_idle,
)

_log = logging.getLogger(__name__)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]

UPLOAD_PREFIX = "/.well-known/davbackup-uploads"
#: ``Upload-Draft-Interop-Version`` of the draft revisions this follows (-09 to -12)
INTEROP_VERSION = 8
SABRE_TYPE = "application/x-sabredav-partialupdate"
PARTIAL_UPLOAD_TYPE = "application/partial-upload"
ACCEPT_PATCH = f"{PARTIAL_UPLOAD_TYPE}, {SABRE_TYPE}"
PROTOCOL_RANGE = "range"
PROTOCOL_IETF = "ietf"
#: problem type (RFC 9457) of a completed upload whose bytes fail the client's digest
DIGEST_PROBLEM = "tag:davbackup,2026:digest-mismatch"
#: seconds a 423 asks the client to wait
RETRY_AFTER = 2
#: seconds a range-PUT offset query waits for a still running append of the upload
QUERY_WAIT = 5.0


def dav_header_extra() -> str:
    """The compliance class to add to the ``DAV`` header of OPTIONS answers."""
    return "sabredav-partialupdate"


def is_reserved(path: str) -> bool:
    """Whether ``path`` lies in the prefix reserved for upload resources."""
    path = normalize_path(path)
    return path == UPLOAD_PREFIX or path.startswith(UPLOAD_PREFIX + "/")


# =====================================================================================
# Dispatch
# =====================================================================================


def dispatch(server: Any, environ: Environ, start_response: StartResponse) -> Iterable[bytes] | None:
    """Answer the request if it belongs to a resume protocol; None lets WsgiDAV answer."""
    method = environ["REQUEST_METHOD"]
    path = environ["PATH_INFO"]
    environ["wsgidav.user_name"] = environ.get("wsgidav.auth.user_name", "anonymous")

    if is_reserved(path):
        return _reserved(server, environ, start_response, method, path)
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
        if _media_type(environ) == SABRE_TYPE:
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
    provider = server._davProvider
    path = normalize_path(environ["PATH_INFO"])
    try:
        dropped = provider.repo.uploads.discard_path(provider.user_name(environ), path)
    except DavBackupError as exc:  # the PUT itself succeeded; never fail it here
        _log.warning("PUT %s: could not drop its upload sessions: %s", path, exc.message)
        return
    if dropped:
        _log.info("PUT %s superseded %d upload session(s)", path, dropped)


def _reserved(server: Any, environ: Environ, start_response: StartResponse, method: str,
              path: str) -> Iterable[bytes]:
    sid = normalize_path(path)[len(UPLOAD_PREFIX) + 1:]
    if not sid or "/" in sid:
        if method in ("GET", "HEAD", "PROPFIND", "OPTIONS"):
            return respond(start_response, 404, [], "no such upload resource\n", head=method == "HEAD")
        raise DAVError(HTTP_FORBIDDEN, f"{UPLOAD_PREFIX} is reserved for upload resources")
    if method == "HEAD":
        return ietf_head(server, environ, start_response, sid)
    if method == "PATCH":
        return ietf_append(server, environ, start_response, sid)
    if method == "DELETE":
        return ietf_delete(server, environ, start_response, sid)
    allow = "HEAD, PATCH, DELETE, OPTIONS"
    if method == "OPTIONS":
        return respond(start_response, 200, [("Allow", allow), ("Accept-Patch", PARTIAL_UPLOAD_TYPE)])
    return respond(start_response, 405, [("Allow", allow)], "upload resources take HEAD, PATCH, DELETE\n")


def _destination_reserved(environ: Environ) -> bool:
    dest = environ.get("HTTP_DESTINATION")
    if not dest:
        return False
    path = unquote(urlparse(dest).path)
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


# =====================================================================================
# Range PUT
# =====================================================================================


def range_put(server: Any, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    provider = server._davProvider
    repo = provider.repo
    user = provider.user_name(environ)
    path = normalize_path(environ["PATH_INFO"])
    session = repo.uploads.find(user, path, PROTOCOL_RANGE)
    held = session.received if session else 0

    crange = parse_content_range(environ.get("HTTP_CONTENT_RANGE", ""))
    if crange is None:
        return _range_answer(start_response, 400, held, "malformed Content-Range (want bytes S-E/T or bytes */T)\n")
    body_length = _content_length(environ)
    if crange.is_query:
        if body_length:
            return _range_answer(start_response, 400, held, "an offset query (bytes */T) has no body\n")
        return _range_query(server, environ, start_response, session, crange.total, parse_digests(environ))
    if body_length is not None and body_length != crange.length:
        return _range_answer(start_response, 400, held,
                             f"Content-Length {body_length} does not match the range ({crange.length} bytes)\n")
    if "HTTP_CONTENT_ENCODING" in environ:
        return _range_answer(start_response, 400, held, "Content-Encoding is not supported\n")
    digests = parse_digests(environ)

    existing, lock_res = _check_target(server, environ, path)
    assert crange.start is not None
    if session is not None and not _same_file(session, crange.total, digests):
        if crange.start != 0:
            extra = [("Upload-Length", str(session.total))] if session.total is not None else []
            return _range_answer(start_response, 409, held,
                                 "this upload was started for another file (other total length or Repr-Digest)\n",
                                 extra)
        repo.uploads.cancel(session)  # a new first part of another file: start over
        session, held = None, 0
    if session is None:
        if crange.start != 0:
            return _range_answer(start_response, 409, 0, f"no upload of {path} is in progress: start at byte 0\n")
        session = repo.uploads.create(user, path, PROTOCOL_RANGE, crange.total, _session_meta(environ, digests))
    elif crange.start > held:
        return _range_answer(start_response, 409, held, f"bytes {held}..{crange.start - 1} are missing\n")
    if session.total is None and crange.total is not None:
        session = repo.uploads.set_total(session, crange.total)

    body = Body(environ, crange.length)
    register(session.id, body)
    try:
        with server._write_transaction(lock_res, environ):
            result = repo.uploads.append(session, crange.start, body, crange.length, allow_overlap=True,
                                         digests=digests or _meta_digests(session))
    except OffsetMismatch as exc:
        return _range_answer(start_response, 409, exc.offset, exc.message + "\n")
    except Locked as exc:
        return _range_answer(start_response, 423, held, exc.message + "\n", [("Retry-After", str(RETRY_AFTER))])
    except DigestMismatch as exc:
        return problem(start_response, 400, DIGEST_PROBLEM, exc.message + "; start the upload again",
                       [("Upload-Offset", "0")])
    except RangeError as exc:
        return _range_answer(start_response, 400, held, exc.message + "\n")
    finally:
        unregister(session.id, body)
    body.finish()
    if result.entry is None:
        return _range_answer(start_response, 308, result.offset)
    _finished(server, environ, session, result.entry)
    return _completed(start_response, result.entry, existing is None, [("Upload-Offset", str(result.offset))])


def _same_file(session: UploadSession, total: int | None, digests: Digests | None) -> bool:
    """Whether a request continues the session's file: same total, same Repr-Digest."""
    if total is not None and session.total is not None and total != session.total:
        return False
    held = _meta_digests(session)
    if digests and held:
        if digests.sha256 and held.sha256 and digests.sha256 != held.sha256:
            return False
        if digests.sha1 and held.sha1 and digests.sha1 != held.sha1:
            return False
    return True


def _range_query(server: Any, environ: Environ, start_response: StartResponse,
                 session: UploadSession | None, total: int | None, digests: Digests | None) -> Iterable[bytes]:
    provider = server._davProvider
    user = provider.user_name(environ)
    path = normalize_path(environ["PATH_INFO"])
    if session is not None and _same_file(session, total, digests):
        wait_idle(session.id, QUERY_WAIT)
        session = provider.repo.uploads.find(user, path, PROTOCOL_RANGE) or session
        extra = [("Upload-Length", str(session.total))] if session.total is not None else []
        return _range_answer(start_response, 308, session.received, None, extra)
    done = RECENT.lookup(("range", user, path))
    wanted = base64.b64encode(digests.sha256).decode("ascii") if digests and digests.sha256 else None
    if done is not None and (total is None or done.size == total) and \
            (wanted is None or done.sha256 in (None, wanted)):
        entry = provider.repo.namespace(user).lookup(path)
        if entry is not None and entry.etag == done.etag:
            return respond(start_response, 200, [("ETag", f'"{entry.etag}"'), ("Upload-Offset", str(entry.size))])
    return _range_answer(start_response, 308, 0)


def _range_answer(start_response: StartResponse, status: int, held: int, text: str | None = None,
                  extra: Headers | None = None) -> list[bytes]:
    headers: Headers = [("Upload-Offset", str(held))]
    if held > 0:
        headers.append(("Range", f"bytes=0-{held - 1}"))
    return respond(start_response, status, headers + list(extra or []), text or "")


# =====================================================================================
# SabreDAV PATCH
# =====================================================================================


def sabredav_patch(server: Any, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    provider = server._davProvider
    path = normalize_path(environ["PATH_INFO"])
    res = provider.get_resource_inst(path, environ)
    if res is None:
        return respond(start_response, 404, [], f"{path}: no such file\n")
    if res.is_collection:
        return respond(start_response, 405, [("Allow", "OPTIONS, HEAD, GET, PROPFIND, DELETE, COPY, MOVE")],
                        "a collection cannot be patched\n")
    urange = parse_update_range(environ.get("HTTP_X_UPDATE_RANGE", ""))
    if urange is None:
        return respond(start_response, 400, [], "missing or malformed X-Update-Range\n")
    if not _has_content_length(environ):
        return respond(start_response, 411, [], "PATCH needs a Content-Length\n")
    length = _content_length(environ) or 0
    size = res.get_content_length()
    start: int | None
    if urange.kind == "append":
        start = None
    elif urange.kind == "range":
        if urange.last < urange.first or urange.last - urange.first + 1 != length:
            return respond(start_response, 416, [], "X-Update-Range and Content-Length disagree\n")
        start = urange.first
    elif urange.kind == "from":
        start = urange.first
    else:
        if urange.first > size:
            return respond(start_response, 416, [], f"the file has only {size} bytes\n")
        start = size - urange.first
    if start is not None and start > size:
        return respond(start_response, 416, [("Content-Range", f"bytes */{size}")],
                        f"the range starts beyond the end of the file ({size} bytes)\n")
    server._evaluate_if_headers(res, environ)
    server._check_write_permission(res, "0", environ)
    ns = provider.namespace(environ)
    with server._write_transaction(res, environ):
        try:
            entry = ns.patch(path, start, Body(environ, length, strict=True), length)
        except IncompleteBody as exc:
            return respond(start_response, 400, [], exc.message + "\n")
        except RangeError as exc:
            return respond(start_response, 416, [], exc.message + "\n")
        except Conflict as exc:
            return respond(start_response, 409, [], exc.message + "\n")
    environ["wsgidav.all_input_read"] = 1
    provider.forget(environ)
    return respond(start_response, 204, [("ETag", f'"{entry.etag}"')])


# =====================================================================================
# IETF resumable uploads
# =====================================================================================


def ietf_create(server: Any, environ: Environ, start_response: StartResponse,
                complete: bool) -> Iterable[bytes]:
    provider = server._davProvider
    repo = provider.repo
    user = provider.user_name(environ)
    path = normalize_path(environ["PATH_INFO"])
    if "HTTP_CONTENT_ENCODING" in environ:
        return respond(start_response, 415, [], "Content-Encoding is not supported for uploads\n")
    body_length = _content_length(environ)
    try:
        total = _ietf_total(environ, 0, body_length, complete, None)
    except _Inconsistent as exc:
        return problem(start_response, 400, "inconsistent-upload-length", str(exc))
    digests = parse_digests(environ)
    existing, lock_res = _check_target(server, environ, path)
    session = repo.uploads.create(user, path, PROTOCOL_IETF, total, _session_meta(environ, digests))
    location = _upload_url(environ, session.id)
    return _ietf_transfer(server, environ, start_response, session, 0, body_length, complete, digests,
                          existing is None, lock_res, [("Location", location)], creating=True)


def ietf_head(server: Any, environ: Environ, start_response: StartResponse, sid: str) -> Iterable[bytes]:
    provider = server._davProvider
    user = provider.user_name(environ)
    preempt(sid)
    try:
        session = provider.repo.uploads.get(sid, user)
    except NotFound:
        done = RECENT.lookup(("ietf", user, sid))
        if done is None:
            return respond(start_response, 404, [("Cache-Control", "no-store")], head=True)
        return respond(start_response, 204, [
            ("Upload-Complete", "?1"), ("Upload-Offset", str(done.size)), ("Upload-Length", str(done.size)),
            ("Cache-Control", "no-store")])
    return respond(start_response, 204, _ietf_state(provider, session) + [("Cache-Control", "no-store")])


def ietf_append(server: Any, environ: Environ, start_response: StartResponse, sid: str) -> Iterable[bytes]:
    provider = server._davProvider
    repo = provider.repo
    user = provider.user_name(environ)
    if _media_type(environ) != PARTIAL_UPLOAD_TYPE:
        return respond(start_response, 415, [("Accept-Patch", PARTIAL_UPLOAD_TYPE)],
                        f"appending to an upload needs Content-Type {PARTIAL_UPLOAD_TYPE}\n")
    complete = parse_sf_boolean(environ.get("HTTP_UPLOAD_COMPLETE"))
    offset = parse_sf_integer(environ.get("HTTP_UPLOAD_OFFSET"))
    if complete is None or offset is None:
        return respond(start_response, 400, [], "an append needs Upload-Complete and Upload-Offset\n")
    body_length = _content_length(environ)
    preempt(sid)
    try:
        session = repo.uploads.get(sid, user)
    except NotFound as exc:
        done = RECENT.lookup(("ietf", user, sid))
        if done is None:
            return respond(start_response, 404, [], exc.message + "\n")
        if complete and not body_length and offset == done.size:
            return respond(start_response, 204, [("Upload-Complete", "?1"), ("ETag", f'"{done.etag}"')])
        return problem(start_response, 400, "completed-upload", "upload is already completed",
                        [("Upload-Complete", "?1")])
    if offset != session.received:
        return _mismatch(start_response, provider, session, offset)
    try:
        total = _ietf_total(environ, offset, body_length, complete, session.total)
    except _Inconsistent as exc:
        return problem(start_response, 400, "inconsistent-upload-length", str(exc), _ietf_state(provider, session))
    existing, lock_res = _check_target(server, environ, session.path, evaluate_if=False)
    if total is not None and session.total is None:
        session = repo.uploads.set_total(session, total)
    digests = parse_digests(environ) or _meta_digests(session)
    return _ietf_transfer(server, environ, start_response, session, offset, body_length, complete, digests,
                          existing is None, lock_res, [], creating=False)


def ietf_delete(server: Any, environ: Environ, start_response: StartResponse, sid: str) -> Iterable[bytes]:
    provider = server._davProvider
    preempt(sid)
    try:
        session = provider.repo.uploads.get(sid, provider.user_name(environ))
        provider.repo.uploads.cancel(session)
    except NotFound as exc:
        return respond(start_response, 404, [], exc.message + "\n")
    except Locked as exc:
        return respond(start_response, 423, [("Retry-After", str(RETRY_AFTER))], exc.message + "\n")
    return respond(start_response, 204, [])


def _ietf_transfer(server: Any, environ: Environ, start_response: StartResponse, session: UploadSession,
                   offset: int, body_length: int | None, complete: bool, digests: Digests | None,
                   is_new: bool, lock_res: Any, extra: Headers, *, creating: bool) -> Iterable[bytes]:
    provider = server._davProvider
    uploads = provider.repo.uploads
    body = Body(environ, body_length)
    register(session.id, body)
    try:
        with server._write_transaction(lock_res, environ):
            result = uploads.append(session, offset, body, body_length, allow_overlap=False,
                                    complete=complete, digests=digests)
    except OffsetMismatch as exc:
        return _mismatch(start_response, provider, session, offset, exc.offset)
    except Locked as exc:
        return respond(start_response, 423, [("Retry-After", str(RETRY_AFTER))] + extra, exc.message + "\n")
    except DigestMismatch as exc:
        return problem(start_response, 400, DIGEST_PROBLEM, exc.message, [("Upload-Complete", "?1")])
    except RangeError as exc:
        fresh = _fresh(uploads, session)
        headers = _ietf_state(provider, fresh) if fresh else []
        return problem(start_response, 400, "inconsistent-upload-length", exc.message, headers + extra)
    finally:
        unregister(session.id, body)
    body.finish()
    if result.entry is not None:
        _finished(server, environ, session, result.entry)
        return _completed(start_response, result.entry, is_new, [("Upload-Complete", "?1")])
    headers = [("Upload-Complete", "?0"), ("Upload-Offset", str(result.offset))] + extra
    headers.append(("Upload-Limit", _limits(uploads, time.time())))
    return respond(start_response, 201 if creating else 204, headers)


def _ietf_state(provider: Any, session: UploadSession) -> Headers:
    headers = [("Upload-Complete", "?0"), ("Upload-Offset", str(session.received))]
    if session.total is not None:
        headers.append(("Upload-Length", str(session.total)))
    headers.append(("Upload-Limit", _limits(provider.repo.uploads, session.updated)))
    return headers


def _limits(uploads: Any, updated: float) -> str:
    remaining = max(0, int(updated + uploads.ttl - time.time()))
    return f"max-age={remaining}"


def _mismatch(start_response: StartResponse, provider: Any, session: UploadSession, provided: int,
              expected: int | None = None) -> list[bytes]:
    fresh = _fresh(provider.repo.uploads, session)
    held = expected if expected is not None else (fresh.received if fresh else session.received)
    headers = [("Upload-Offset", str(held)), ("Upload-Complete", "?0")]
    return problem(start_response, 409, "mismatching-upload-offset",
                    "offset from request does not match offset of resource", headers,
                    {"expected-offset": held, "provided-offset": provided})


def _fresh(uploads: Any, session: UploadSession) -> UploadSession | None:
    try:
        return uploads.get(session.id, session.user)
    except NotFound:
        return None


class _Inconsistent(Exception):
    pass


def _ietf_total(environ: Environ, offset: int, body_length: int | None, complete: bool,
                known: int | None) -> int | None:
    """The upload length the request states (Upload-Length, or offset+body when complete)."""
    candidates = []
    declared = parse_sf_integer(environ.get("HTTP_UPLOAD_LENGTH"))
    if declared is not None:
        candidates.append(declared)
    if complete and body_length is not None:
        candidates.append(offset + body_length)
    if known is not None:
        candidates.append(known)
    if len(set(candidates)) > 1:
        raise _Inconsistent(f"inconsistent upload lengths {sorted(set(candidates))}")
    total = candidates[0] if candidates else None
    if total is not None and body_length is not None and offset + body_length > total:
        raise _Inconsistent(f"{offset} + {body_length} bytes run past the upload length {total}")
    return total


def _upload_url(environ: Environ, sid: str) -> str:
    return environ.get("SCRIPT_NAME", "").rstrip("/") + f"{UPLOAD_PREFIX}/{sid}"


# =====================================================================================
# Shared pieces
# =====================================================================================


def _check_target(server: Any, environ: Environ, path: str, *, evaluate_if: bool = True) -> tuple[Any, Any]:
    """What WsgiDAV's PUT checks: not a collection, parent exists, If headers, locks.

    Returns the existing resource (or None) and the resource to hold the write
    transaction on (a placeholder for a new file).
    """
    provider = server._davProvider
    res = provider.get_resource_inst(path, environ)
    if res is not None and res.is_collection:
        raise DAVError(HTTP_METHOD_NOT_ALLOWED, "cannot upload to a collection")
    parent = provider.get_resource_inst(util.get_uri_parent(path), environ)
    if parent is None or not parent.is_collection:
        raise DAVError(HTTP_CONFLICT, "the parent must be an existing collection")
    if evaluate_if:
        if res is None and "HTTP_IF_MATCH" in environ:
            raise DAVError(HTTP_PRECONDITION_FAILED, "If-Match: no such resource")
        server._evaluate_if_headers(res, environ)
    if res is None:
        server._check_write_permission(parent, "0", environ)
        return None, PendingFile(path, environ)
    server._check_write_permission(res, "0", environ)
    return res, res


def _finished(server: Any, environ: Environ, session: UploadSession, entry: Any) -> None:
    provider = server._davProvider
    mtime = _mtime(environ) or session.meta.get("mtime")
    if mtime is not None and environ["wsgidav.config"].get("honor_mtime_header", False):
        try:
            provider.namespace(environ).set_modified(session.path, float(mtime))
        except DavBackupError as exc:
            _log.warning("upload of %s: could not set mtime: %s", session.path, exc.message)
    provider.forget(environ)
    key = ("ietf", session.user, session.id) if session.protocol == PROTOCOL_IETF \
        else ("range", session.user, session.path)
    RECENT.add(key, Done(entry.size, entry.etag, session.meta.get("sha256")))


def _completed(start_response: StartResponse, entry: Any, is_new: bool, extra: Headers) -> list[bytes]:
    return respond(start_response, 201 if is_new else 204, [("ETag", f'"{entry.etag}"')] + extra)


def _session_meta(environ: Environ, digests: Digests | None) -> dict:
    meta: dict[str, Any] = {}
    if digests and digests.sha256:
        meta["sha256"] = base64.b64encode(digests.sha256).decode("ascii")
    if digests and digests.sha1:
        meta["sha1"] = digests.sha1.hex()
    mtime = _mtime(environ)
    if mtime is not None:
        meta["mtime"] = mtime
    return meta


def _meta_digests(session: UploadSession) -> Digests | None:
    sha256 = session.meta.get("sha256")
    sha1 = session.meta.get("sha1")
    if not sha256 and not sha1:
        return None
    return Digests(sha256=base64.b64decode(sha256) if sha256 else None,
                   sha1=bytes.fromhex(sha1) if sha1 else None)


def _mtime(environ: Environ) -> int | None:
    value = environ.get("HTTP_X_OC_MTIME", "").strip()
    return int(value) if value.isdigit() else None


def _content_length(environ: Environ) -> int | None:
    """The body length: None for a chunked body, 0 when no Content-Length was sent."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    value = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise DAVError(400, f"invalid Content-Length {value!r}")
    return int(value)


def _has_content_length(environ: Environ) -> bool:
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return not chunked and bool(str(environ.get("CONTENT_LENGTH") or "").strip())


def _media_type(environ: Environ) -> str:
    return environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()


