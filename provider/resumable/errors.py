"""How the resume protocols answer the core's errors: one table, no ``except`` ladders.

Every handler catches :class:`~davbackup.errors.DavBackupError` once and hands it to
:func:`answer_error`, which looks the exception's class up in :data:`ERRORS` (the
nearest class in its MRO wins) and answers with that row's status, error element and
headers, plus the *state headers* the protocol passes in (what the server holds after
the failure: ``Upload-Offset``/``Range`` for range PUT, ``Upload-Offset``/
``Upload-Complete``/``Upload-Length`` for the IETF draft). An error the table does not
name is re-raised; the request server then answers it with its ``http_status``
(:mod:`provider.errors`).

The error element is an RFC 9457 problem type: the IETF draft's registered types
(``mismatching-upload-offset``, ``inconsistent-upload-length``) and davbackup's own
``tag:`` URI for a digest mismatch. Rows without one answer in ``text/plain``.
Each row's status is the one the exception class itself declares (checked by
``tests/resume/test_resume_errors.py``), so the same core error gets the same status in
every protocol: ``RangeError`` (a range that does not fit the file) is always 416,
``LengthMismatch`` (bytes that disagree with the declared length) always 400.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from davbackup.errors import (
    Conflict,
    DavBackupError,
    DigestMismatch,
    IncompleteBody,
    LengthMismatch,
    Locked,
    NotFound,
    OffsetMismatch,
    RangeError,
    TooLarge,
    TooManyUploads,
)
from provider.resumable.answers import Headers, StartResponse, problem, respond

#: problem type (RFC 9457) of a completed upload whose bytes fail the client's digest
DIGEST_PROBLEM = "tag:davbackup,2026:digest-mismatch"
#: seconds a 423 asks the client to wait
RETRY_AFTER = 2


def _no_headers(exc: Any) -> Headers:
    return []


def _no_members(exc: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class ErrorAnswer:
    """One row: the status, the error element (problem type; None = plain text), and
    the headers and problem members that come from the exception itself."""

    status: int
    element: str | None = None
    headers: Callable[[Any], Headers] = field(default=_no_headers)
    members: Callable[[Any], dict[str, Any]] = field(default=_no_members)


def _offset_headers(exc: OffsetMismatch) -> Headers:
    return [("Upload-Offset", str(exc.offset))]


def _offset_members(exc: OffsetMismatch) -> dict[str, Any]:
    members: dict[str, Any] = {"expected-offset": exc.offset}
    if exc.provided is not None:
        members["provided-offset"] = exc.provided
    return members


ERRORS: dict[type[DavBackupError], ErrorAnswer] = {
    OffsetMismatch: ErrorAnswer(409, "mismatching-upload-offset", _offset_headers, _offset_members),
    LengthMismatch: ErrorAnswer(400, "inconsistent-upload-length"),
    DigestMismatch: ErrorAnswer(400, DIGEST_PROBLEM),
    RangeError: ErrorAnswer(416),
    IncompleteBody: ErrorAnswer(400),
    Locked: ErrorAnswer(423, headers=lambda exc: [("Retry-After", str(RETRY_AFTER))]),
    Conflict: ErrorAnswer(409),
    NotFound: ErrorAnswer(404),
    TooLarge: ErrorAnswer(413),
    TooManyUploads: ErrorAnswer(429),
}


def row_for(exc: DavBackupError) -> ErrorAnswer | None:
    """The table row of ``exc``'s nearest class, or None."""
    for cls in type(exc).__mro__:
        row = ERRORS.get(cls)
        if row is not None:
            return row
    return None


def answer_error(start_response: StartResponse, exc: DavBackupError,
                 state: Sequence[tuple[str, str]] = ()) -> list[bytes]:
    """Answer ``exc`` by the table; ``state`` headers are added unless the row sets them."""
    row = row_for(exc)
    if row is None:
        raise exc
    headers = row.headers(exc)
    names = {name.lower() for name, _ in headers}
    headers += [(name, value) for name, value in state if name.lower() not in names]
    if row.element is not None:
        return problem(start_response, row.status, row.element, exc.message, headers, row.members(exc))
    return respond(start_response, row.status, headers, exc.message + "\n")
