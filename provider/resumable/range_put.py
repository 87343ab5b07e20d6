"""Range PUT: ``PUT`` with ``Content-Range: bytes S-E/T`` appends to an upload session.

Session protocol ``"range"``, one session per user and path.

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
differs from E-S+1 / a number above
2**63-1
T or E+1 above ``uploads.max_length``  ``413`` + ``Upload-Offset``; nothing changes
a new upload while the user holds      ``429`` + ``Upload-Offset: 0``; nothing changes
``uploads.max_sessions_per_user``
another request appends right now      ``423`` + ``Retry-After`` + ``Upload-Offset`` (an offset
                                       query waits up to 5 s for that request to end first)
whole-file digest does not match       ``400`` problem ``tag:davbackup,2026:digest-mismatch`` +
                                       ``Upload-Offset: 0``; session dropped, old version stays
=====================================  ==========================================

``T`` may be ``*`` (unknown) until the last part. A body that breaks off keeps what
arrived (the next offset query tells). A plain whole-file PUT of the path supersedes
its sessions (:func:`provider.resumable.after_whole_put`). Errors of the core are
answered by the table in :mod:`provider.resumable.errors`, with the held offset as
state headers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from davbackup.digests import Digests
from davbackup.errors import Conflict, DavBackupError, OffsetMismatch
from davbackup.uploads import UploadSession
from provider.internals import dav_provider, write_transaction
from provider.paths import normalize_path
from provider.resumable.answers import RECENT, Headers, StartResponse, respond
from provider.resumable.body import Body, register, unregister, wait_idle
from provider.resumable.common import (
    PROTOCOL_RANGE,
    Environ,
    check_target,
    completed,
    content_length,
    finished,
    meta_digests,
    session_meta,
)
from provider.resumable.errors import answer_error, row_for
from provider.resumable.headers import ContentRange, parse_content_range, parse_digests

#: seconds a range-PUT offset query waits for a still running append of the upload
QUERY_WAIT = 5.0


def range_put(server: Any, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    provider = dav_provider(server)
    user = provider.user_name(environ)
    path = normalize_path(environ["PATH_INFO"])
    try:
        return _range_put(server, environ, start_response, user, path)
    except DavBackupError as exc:
        if row_for(exc) is None:
            raise
        return answer_error(start_response, exc, _state(provider.repo.uploads.find(user, path, PROTOCOL_RANGE)))


def _range_put(server: Any, environ: Environ, start_response: StartResponse, user: str,
               path: str) -> Iterable[bytes]:
    uploads = dav_provider(server).repo.uploads
    session = uploads.find(user, path, PROTOCOL_RANGE)
    held = session.received if session else 0

    crange = parse_content_range(environ.get("HTTP_CONTENT_RANGE", ""))
    if crange is None:
        return _range_answer(start_response, 400, held, "malformed Content-Range (want bytes S-E/T or bytes */T)\n")
    body_length = content_length(environ)
    if crange.is_query:
        if body_length:
            return _range_answer(start_response, 400, held, "an offset query (bytes */T) has no body\n")
        return _range_query(server, environ, start_response, session, crange.total, parse_digests(environ))
    if body_length is not None and body_length != crange.length:
        return _range_answer(start_response, 400, held,
                             f"Content-Length {body_length} does not match the range ({crange.length} bytes)\n")
    if "HTTP_CONTENT_ENCODING" in environ:
        return _range_answer(start_response, 400, held, "Content-Encoding is not supported\n")
    assert crange.start is not None and crange.end is not None
    uploads.check_length(crange.total)
    uploads.check_length(crange.end + 1)
    digests = parse_digests(environ)

    existing, lock_res = check_target(server, environ, path)
    session = _session_for(server, environ, user, path, session, crange, digests)

    body = Body(environ, crange.length)
    register(session.id, body)
    try:
        with write_transaction(server, lock_res, environ):
            result = uploads.append(session, crange.start, body, crange.length, allow_overlap=True,
                                    digests=digests or meta_digests(session))
    finally:
        unregister(session.id, body)
    body.finish()
    if result.entry is None:
        return _range_answer(start_response, 308, result.offset)
    finished(server, environ, session, result.entry)
    return completed(start_response, result.entry, existing is None, [("Upload-Offset", str(result.offset))])


def _session_for(server: Any, environ: Environ, user: str, path: str, session: UploadSession | None,
                 crange: ContentRange, digests: Digests | None) -> UploadSession:
    """The session this part continues, or a new one when the part starts a file."""
    uploads = dav_provider(server).repo.uploads
    assert crange.start is not None
    if session is not None and not _same_file(session, crange.total, digests):
        if crange.start != 0:
            raise Conflict("this upload was started for another file (other total length or Repr-Digest)")
        uploads.cancel(session)  # a new first part of another file: start over
        session = None
    if session is None:
        if crange.start != 0:
            raise OffsetMismatch(f"no upload of {path} is in progress: start at byte 0", 0, crange.start)
        # single: first parts racing here share one session (with two, one's bytes were lost)
        session = uploads.create(user, path, PROTOCOL_RANGE, crange.total, session_meta(environ, digests),
                                 single=True)
        if not _same_file(session, crange.total, digests):
            raise Conflict("another upload of this path started at the same moment (other length or Repr-Digest)")
    elif crange.start > session.received:
        raise OffsetMismatch(f"bytes {session.received}..{crange.start - 1} are missing",
                             session.received, crange.start)
    if session.total is None and crange.total is not None:
        session = uploads.set_total(session, crange.total)
    return session


def _same_file(session: UploadSession, total: int | None, digests: Digests | None) -> bool:
    """Whether a request continues the session's file: same total, same Repr-Digest."""
    if total is not None and session.total is not None and total != session.total:
        return False
    held = meta_digests(session)
    if digests and held:
        if digests.sha256 and held.sha256 and digests.sha256 != held.sha256:
            return False
        if digests.sha1 and held.sha1 and digests.sha1 != held.sha1:
            return False
    return True


def _range_query(server: Any, environ: Environ, start_response: StartResponse,
                 session: UploadSession | None, total: int | None, digests: Digests | None) -> Iterable[bytes]:
    provider = dav_provider(server)
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


def _state(session: UploadSession | None) -> Headers:
    """What the server holds of this path's upload, for an error answer."""
    if session is None:
        return _held_headers(0)
    extra = [("Upload-Length", str(session.total))] if session.total is not None else []
    return _held_headers(session.received) + extra


def _held_headers(held: int) -> Headers:
    headers: Headers = [("Upload-Offset", str(held))]
    if held > 0:
        headers.append(("Range", f"bytes=0-{held - 1}"))
    return headers


def _range_answer(start_response: StartResponse, status: int, held: int, text: str | None = None,
                  extra: Headers | None = None) -> list[bytes]:
    return respond(start_response, status, _held_headers(held) + list(extra or []), text or "")
