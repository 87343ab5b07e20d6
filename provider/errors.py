"""Translate davbackup's error hierarchy into WsgiDAV's ``DAVError``.

Every error of :mod:`davbackup.errors` carries the HTTP status it maps to; the
adapter only has to re-raise it as a ``DAVError`` so that WsgiDAV answers with that
status instead of a generic 500. WsgiDAV swallows exceptions inside some hooks
(``handle_delete``, ``handle_copy``, ...) and turns anything that is not a
``DAVError`` into 500, so every resource method that calls the core wraps the call
in :func:`dav_errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from wsgidav.dav_error import ERROR_DESCRIPTIONS, DAVError

from davbackup.errors import DavBackupError

_log = logging.getLogger(__name__)

# WsgiDAV renders statuses it has no phrase for as "<code> Status"; name the ones
# davbackup answers with.
for _code, _phrase in {
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    507: "Insufficient Storage",
}.items():
    ERROR_DESCRIPTIONS.setdefault(_code, f"{_code} {_phrase}")


def to_dav_error(exc: DavBackupError) -> DAVError:
    """The ``DAVError`` that answers for ``exc`` (same status, message as context)."""
    status = int(getattr(exc, "http_status", 500) or 500)
    if status >= 500:
        _log.error("%s: %s", type(exc).__name__, exc.message)
    retry_after = getattr(exc, "retry_after", None)
    headers = [("Retry-After", str(retry_after))] if retry_after else None
    return DAVError(status, exc.message, src_exception=exc, add_headers=headers)


@contextmanager
def dav_errors() -> Iterator[None]:
    """Re-raise any :class:`DavBackupError` raised inside the block as ``DAVError``."""
    try:
        yield
    except DavBackupError as exc:
        raise to_dav_error(exc) from exc
