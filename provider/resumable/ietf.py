"""IETF resumable uploads (draft-ietf-httpbis-resumable-upload, session protocol ``"ietf"``).

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
lengths → 400 ``inconsistent-upload-length``; a malformed ``Upload-Length`` → 400;
one above ``uploads.max_length`` → 413; a creation while the user holds
``uploads.max_sessions_per_user`` open uploads → 429. ``DELETE <upload>`` → 204.

cheroot cannot send ``104`` interim responses, so the Location is only known from
a final response: clients should create with an empty ``Upload-Complete: ?0``
request ("careful creation") and learn the offset with HEAD after a break.

A new request to an upload resource stops a still-running append to it (the draft's
recommended concurrency handling): the old request ends as if its connection broke,
keeping what arrived. Only the upload's owner can do that: the ownership check comes
first, so another user's request (even a read-only user's HEAD) is a 404 that
leaves the running append alone. Deviation: when an upload announced its length,
receiving the last byte completes it even with ``Upload-Complete: ?0`` (the core
completes on the total); a later empty ``?1`` append to it is answered as a success.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError

from davbackup import clock
from davbackup.digests import Digests
from davbackup.errors import DavBackupError, LengthMismatch, NotFound, OffsetMismatch
from davbackup.uploads import UploadManager, UploadSession
from provider.internals import dav_provider, write_transaction
from provider.paths import normalize_path
from provider.resumable.answers import RECENT, Headers, StartResponse, problem, respond
from provider.resumable.body import PREEMPT_WAIT, Body, preempt, register, unregister
from provider.resumable.common import (
    PARTIAL_UPLOAD_TYPE,
    PROTOCOL_IETF,
    UPLOAD_PREFIX,
    Environ,
    check_target,
    completed,
    content_length,
    finished,
    media_type,
    meta_digests,
    session_meta,
)
from provider.resumable.errors import answer_error, row_for
from provider.resumable.headers import parse_digests, parse_sf_boolean, parse_sf_integer

#: ``Upload-Draft-Interop-Version`` of the draft revisions this follows (-09 to -12)
INTEROP_VERSION = 8
UPLOAD_ALLOW = "HEAD, PATCH, DELETE, OPTIONS"


def upload_resource(server: Any, environ: Environ, start_response: StartResponse, method: str,
                    path: str) -> Iterable[bytes]:
    """A request below the reserved prefix: only upload resources live there."""
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
    if method == "OPTIONS":
        return respond(start_response, 200, [("Allow", UPLOAD_ALLOW), ("Accept-Patch", PARTIAL_UPLOAD_TYPE)])
    return respond(start_response, 405, [("Allow", UPLOAD_ALLOW)], "upload resources take HEAD, PATCH, DELETE\n")


def ietf_create(server: Any, environ: Environ, start_response: StartResponse,
                complete: bool) -> Iterable[bytes]:
    provider = dav_provider(server)
    uploads = provider.repo.uploads
    user = provider.user_name(environ)
    path = normalize_path(environ["PATH_INFO"])
    if "HTTP_CONTENT_ENCODING" in environ:
        return respond(start_response, 415, [], "Content-Encoding is not supported for uploads\n")
    body_length = content_length(environ)
    try:
        total = _ietf_total(environ, 0, body_length, complete, None)
        digests = parse_digests(environ)
        existing, lock_res = check_target(server, environ, path)
        session = uploads.create(user, path, PROTOCOL_IETF, total, session_meta(environ, digests))
    except DavBackupError as exc:
        return answer_error(start_response, exc)
    location = environ.get("SCRIPT_NAME", "").rstrip("/") + f"{UPLOAD_PREFIX}/{session.id}"
    return _transfer(server, environ, start_response, session, 0, body_length, complete, digests,
                     existing is None, lock_res, [("Location", location)], creating=True)


def ietf_head(server: Any, environ: Environ, start_response: StartResponse, sid: str) -> Iterable[bytes]:
    provider = dav_provider(server)
    user = provider.user_name(environ)
    session = _take_over(provider.repo.uploads, sid, user)
    if session is None:
        done = RECENT.lookup(("ietf", user, sid))
        if done is None:
            return respond(start_response, 404, [("Cache-Control", "no-store")], head=True)
        return respond(start_response, 204, [
            ("Upload-Complete", "?1"), ("Upload-Offset", str(done.size)), ("Upload-Length", str(done.size)),
            ("Cache-Control", "no-store")])
    return respond(start_response, 204, _state(provider.repo.uploads, session) + [("Cache-Control", "no-store")])


def ietf_append(server: Any, environ: Environ, start_response: StartResponse, sid: str) -> Iterable[bytes]:
    provider = dav_provider(server)
    uploads = provider.repo.uploads
    user = provider.user_name(environ)
    if media_type(environ) != PARTIAL_UPLOAD_TYPE:
        return respond(start_response, 415, [("Accept-Patch", PARTIAL_UPLOAD_TYPE)],
                       f"appending to an upload needs Content-Type {PARTIAL_UPLOAD_TYPE}\n")
    complete = parse_sf_boolean(environ.get("HTTP_UPLOAD_COMPLETE"))
    offset = parse_sf_integer(environ.get("HTTP_UPLOAD_OFFSET"))
    if complete is None or offset is None:
        return respond(start_response, 400, [], "an append needs Upload-Complete and Upload-Offset\n")
    body_length = content_length(environ)
    session = _take_over(uploads, sid, user)
    if session is None:
        done = RECENT.lookup(("ietf", user, sid))
        if done is None:
            return respond(start_response, 404, [], "no such upload session (finished, cancelled or expired)\n")
        if complete and not body_length and offset == done.size:
            return respond(start_response, 204, [("Upload-Complete", "?1"), ("ETag", f'"{done.etag}"')])
        return problem(start_response, 400, "completed-upload", "upload is already completed",
                       [("Upload-Complete", "?1")])
    try:
        if offset != session.received:
            raise OffsetMismatch("offset from request does not match offset of resource", session.received, offset)
        total = _ietf_total(environ, offset, body_length, complete, session.total)
        existing, lock_res = check_target(server, environ, session.path, evaluate_if=False)
        if total is not None and session.total is None:
            session = uploads.set_total(session, total)
    except DavBackupError as exc:
        return answer_error(start_response, exc, _error_state(uploads, session))
    digests = parse_digests(environ) or meta_digests(session)
    return _transfer(server, environ, start_response, session, offset, body_length, complete, digests,
                     existing is None, lock_res, [], creating=False)


def ietf_delete(server: Any, environ: Environ, start_response: StartResponse, sid: str) -> Iterable[bytes]:
    provider = dav_provider(server)
    uploads = provider.repo.uploads
    session = _take_over(uploads, sid, provider.user_name(environ))
    if session is None:
        return respond(start_response, 404, [], "no such upload session (finished, cancelled or expired)\n")
    try:
        uploads.cancel(session)
    except DavBackupError as exc:
        return answer_error(start_response, exc)
    return respond(start_response, 204, [])


def _take_over(uploads: UploadManager, sid: str, user: str) -> UploadSession | None:
    """``user``'s session ``sid`` after stopping an append still running for it; None if
    there is none or it is not hers. Ownership is checked before anything is stopped."""
    try:
        uploads.get(sid, user)
    except NotFound:
        return None
    preempt(sid)
    uploads.stop_elsewhere(sid, PREEMPT_WAIT)  # in a cluster: an append on another node
    try:
        return uploads.get(sid, user)  # fresh: the stopped request may have stored more
    except NotFound:
        return None


def _transfer(server: Any, environ: Environ, start_response: StartResponse, session: UploadSession,
              offset: int, body_length: int | None, complete: bool, digests: Digests | None,
              is_new: bool, lock_res: Any, extra: Headers, *, creating: bool) -> Iterable[bytes]:
    uploads = dav_provider(server).repo.uploads
    body = Body(environ, body_length)
    register(session.id, body)
    try:
        with write_transaction(server, lock_res, environ):
            result = uploads.append(session, offset, body, body_length, allow_overlap=False,
                                    complete=complete, digests=digests)
    except DavBackupError as exc:
        if row_for(exc) is None:
            raise
        return answer_error(start_response, exc, _error_state(uploads, session) + extra)
    finally:
        unregister(session.id, body)
    body.finish()
    if result.entry is not None:
        finished(server, environ, session, result.entry)
        return completed(start_response, result.entry, is_new, [("Upload-Complete", "?1")])
    headers = [("Upload-Complete", "?0"), ("Upload-Offset", str(result.offset))] + extra
    headers.append(("Upload-Limit", _limit(uploads, clock.now())))
    return respond(start_response, 201 if creating else 204, headers)


def _state(uploads: UploadManager, session: UploadSession) -> Headers:
    headers = [("Upload-Complete", "?0"), ("Upload-Offset", str(session.received))]
    if session.total is not None:
        headers.append(("Upload-Length", str(session.total)))
    headers.append(("Upload-Limit", _limit(uploads, session.updated)))
    return headers


def _error_state(uploads: UploadManager, session: UploadSession) -> Headers:
    """The upload's state after a failed request; ``Upload-Complete: ?1`` when the
    failure ended it (a digest mismatch drops the session)."""
    try:
        return _state(uploads, uploads.get(session.id, session.user))
    except NotFound:
        return [("Upload-Complete", "?1")]


def _limit(uploads: UploadManager, updated: float) -> str:
    remaining = max(0, int(updated + uploads.ttl - clock.now()))
    return f"max-age={remaining}"


def _ietf_total(environ: Environ, offset: int, body_length: int | None, complete: bool,
                known: int | None) -> int | None:
    """The upload length the request states (Upload-Length, or offset+body when complete)."""
    candidates = []
    if "HTTP_UPLOAD_LENGTH" in environ:
        declared = parse_sf_integer(environ["HTTP_UPLOAD_LENGTH"])
        if declared is None:
            raise LengthMismatch(f"malformed Upload-Length {environ['HTTP_UPLOAD_LENGTH'][:40]!r}")
        candidates.append(declared)
    if complete and body_length is not None:
        candidates.append(offset + body_length)
    if known is not None:
        candidates.append(known)
    if len(set(candidates)) > 1:
        raise LengthMismatch(f"inconsistent upload lengths {sorted(set(candidates))}")
    total = candidates[0] if candidates else None
    if total is not None and body_length is not None and offset + body_length > total:
        raise LengthMismatch(f"{offset} + {body_length} bytes run past the upload length {total}")
    return total
