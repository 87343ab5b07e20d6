"""Translate davbackup's error hierarchy into WsgiDAV's ``DAVError``.

Every error of :mod:`davbackup.errors` carries the HTTP status it maps to; the
adapter only has to re-raise it as a ``DAVError`` so that WsgiDAV answers with that
status instead of a generic 500. WsgiDAV swallows exceptions inside some hooks
(``handle_delete``, ``handle_copy``, ...) and turns anything that is not a
``DAVError`` into 500, so every resource method that calls the core wraps the call
in :func:`dav_errors`.

:class:`LoggingErrorPrinter` is WsgiDAV's ``ErrorPrinter`` (which turns exceptions
into error responses) with one addition: every error that becomes a 500 is written
to davbackup's log with its traceback, the method and the path. WsgiDAV logs those
to its own logger, which does not propagate, so they used to vanish.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Callable

from wsgidav.dav_error import ERROR_DESCRIPTIONS, HTTP_INTERNAL_ERROR, DAVError
from wsgidav.error_printer import ErrorPrinter

from davbackup.errors import DavBackupError

_log = logging.getLogger(__name__)
_LOGGED = "_davbackup_logged"  # set on an exception whose traceback was logged
#: the request this thread is answering (``environ``), set by :class:`_TracebackLogger`
_current = threading.local()

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
    if status == 500:
        # logged here: WsgiDAV turns errors of COPY/MOVE members into a status
        # without raising, so the printer below would never see them
        _log_internal(getattr(_current, "environ", None) or {}, exc)
        setattr(exc, _LOGGED, True)
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


Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class LoggingErrorPrinter(ErrorPrinter):
    """``ErrorPrinter`` that logs the traceback of every 500 it sends."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, _TracebackLogger(next_app), config)


class _TracebackLogger:
    """Sits below the ErrorPrinter: logs what it will answer with 500, re-raises."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        app_iter: Iterable[bytes] = ()
        _current.environ = environ
        try:
            app_iter = self.app(environ, start_response)
            yield from app_iter
        except DAVError as exc:
            if exc.value == HTTP_INTERNAL_ERROR:
                source = exc.src_exception if isinstance(exc.src_exception, BaseException) else exc
                if not getattr(source, _LOGGED, False):
                    _log_internal(environ, source)
            raise
        except OSError as exc:
            if exc.errno != errno.EACCES:  # EACCES becomes a 403
                _log_internal(environ, exc)
            raise
        except DavBackupError as exc:
            # one that no handler translated (e.g. the catalog database became
            # unreachable while WsgiDAV looked a resource up): its own status, so a
            # lost PostgreSQL is a 503 with Retry-After, not a 500
            if int(getattr(exc, "http_status", 500) or 500) == 500:
                _log_internal(environ, exc)
                raise
            raise to_dav_error(exc) from exc
        except Exception as exc:
            _log_internal(environ, exc)
            raise
        finally:
            _current.environ = None
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()


def _log_internal(environ: Environ, exc: BaseException) -> None:
    _log.error(
        "internal error on %s %s (user %s): %s: %s",
        environ.get("REQUEST_METHOD", "-"),
        environ.get("PATH_INFO", "-"),
        environ.get("wsgidav.auth.user_name") or "-",
        type(exc).__name__,
        getattr(exc, "message", None) or exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
