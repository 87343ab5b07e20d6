"""Errors of the client, and how HTTP answers map onto :mod:`davbackup.errors`.

The client raises the same hierarchy as the server core, so the CLI ends with the
same exit codes: 401 → :class:`AuthenticationFailed` (5), 403 → PermissionDenied (5),
404 → NotFound (3), 409 → Conflict (3), 423 → Locked (6), 507 → StorageFull (21),
other 5xx → :class:`ServerError` (1); no connection after all retries →
:class:`ConnectionFailed` (4).
"""

from __future__ import annotations

import requests

from davbackup.errors import (
    AuthenticationFailed,
    Conflict,
    DavBackupError,
    Locked,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    StorageFull,
    UsageError,
)


class ServerError(DavBackupError):
    """The server answered with an error the client cannot get past."""

    http_status = 502
    exit_code = 1


class ConnectionFailed(DavBackupError):
    """The server could not be reached, or kept dropping the connection."""

    http_status = 503
    exit_code = 4


class TransferFailed(DavBackupError):
    """The bytes the server holds do not match the local file (digest mismatch)."""

    http_status = 400
    exit_code = 3


_BY_STATUS: dict[int, type[DavBackupError]] = {
    400: UsageError,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    405: Conflict,
    409: Conflict,
    412: PreconditionFailed,
    423: Locked,
    507: StorageFull,
}

#: exceptions of requests that mean "the connection broke": retry after a pause
RETRYABLE = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def error_for(response: requests.Response, what: str) -> DavBackupError:
    """The error for an unexpected HTTP answer to ``what`` (e.g. ``"PUT /a/b"``)."""
    status = response.status_code
    detail = _short_text(response)
    message = f"{what}: {status} {response.reason or ''}".rstrip()
    if detail:
        message += f" ({detail})"
    if status == 401:
        message = f"{what}: the server refused the user name or password (401)"
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else DavBackupError
    return cls(message)


def _short_text(response: requests.Response) -> str:
    ctype = response.headers.get("Content-Type", "")
    if not ctype.startswith(("text/plain", "application/problem+json")):
        return ""
    try:
        text = response.text.strip()
    except Exception:  # noqa: BLE001 - a body we cannot decode is not worth reporting
        return ""
    return text.splitlines()[0][:200] if text else ""
