"""What desktop clients need from the server beyond RFC 4918.

* :class:`OptionsPath`: cheroot leaves the path of an ``OPTIONS`` request
  percent-encoded (it decodes every other method's). WsgiDAV then looks up
  ``/caf%C3%A9`` instead of ``/café`` and answers as if the folder did not exist
  (a file: 404), so Windows and Finder cannot open a folder with a non-ASCII name
  as a drive (issue 8, item 18). The middleware decodes the path the way cheroot
  does for other methods.
* :func:`win32_modified`: Windows Explorer writes a file's modification time as the
  dead property ``Z:Win32LastModifiedTime`` (PROPPATCH after PUT). It is kept, and
  also becomes the file's modification time, so listings and other clients show it.
* :class:`OsMetadataPolicy`: what to do with the files operating systems leave
  behind (``.DS_Store``, ``._*`` AppleDouble files, ``Thumbs.db``, ``desktop.ini``):
  ``store`` them like any file (the default), ``refuse`` them with 403, or ``skip``
  them (a PUT is read and answered as if stored; nothing is kept).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Callable
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from lxml import etree
from wsgidav import util
from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError

from provider.internals import dav_provider

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

WIN32_NS = "urn:schemas-microsoft-com:"
WIN32_MTIME = "{urn:schemas-microsoft-com:}Win32LastModifiedTime"

_QUOTED_SLASH = re.compile(r"%2f", re.IGNORECASE)


class OptionsPath:
    """Percent-decode the path of OPTIONS requests (cheroot does it for all others)."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            path = environ.get("PATH_INFO", "")
            if "%" in path:
                environ["PATH_INFO"] = decode_wsgi_path(path)
        return self.app(environ, start_response)


def decode_wsgi_path(path: str) -> str:
    """Decode ``%XX`` in a WSGI path (a latin-1 string of the raw bytes).

    An encoded slash stays encoded, as cheroot keeps it for other methods.
    """
    raw = path.encode("latin-1")
    parts = _QUOTED_SLASH.split(raw.decode("latin-1"))
    decoded = b"%2F".join(unquote_to_bytes(part) for part in parts)
    return decoded.decode("latin-1")


def win32_modified(value: bytes | str) -> float | None:
    """The time in a stored ``Win32LastModifiedTime`` value (RFC 1123), or None."""
    try:
        element = etree.fromstring(util.to_bytes(value))
    except etree.XMLSyntaxError:
        return None
    text = (element.text or "").strip()
    return util.parse_time_string(text) if text else None


# --- files operating systems leave behind ---------------------------------------------

OS_METADATA_MODES = ("store", "refuse", "skip")
#: environ key holding the request's :class:`OsMetadataPolicy` (read by resources)
OS_METADATA_KEY = "davbackup.os_metadata"
_METADATA_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


def is_os_metadata(name: str) -> bool:
    """Whether ``name`` is one of the files macOS or Windows Explorer write on their own."""
    return name.startswith("._") or name.lower() in _METADATA_NAMES


def _last_segment(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class OsMetadataPolicy:
    """Applies ``webdav.os_metadata`` to one request before WsgiDAV handles it."""

    def __init__(self, mode: str) -> None:
        if mode not in OS_METADATA_MODES:
            raise ValueError(f"os_metadata must be one of {', '.join(OS_METADATA_MODES)}")
        self.mode = mode

    def skips(self, path: str) -> bool:
        """Whether a write to ``path`` is to be answered without storing anything."""
        return self.mode == "skip" and is_os_metadata(_last_segment(path))

    def check(self, server: Any, environ: Environ, start_response: StartResponse
              ) -> Iterable[bytes] | None:
        """An answer for the request if the policy decides it, else None."""
        if self.mode == "store":
            return None
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"]
        targets = [path] if method in ("PUT", "MKCOL", "LOCK", "PATCH") else []
        if method in ("COPY", "MOVE") and environ.get("HTTP_DESTINATION"):
            targets = [unquote(urlsplit(environ["HTTP_DESTINATION"]).path)]
        names = [_last_segment(t) for t in targets]
        if not any(is_os_metadata(n) for n in names):
            return None
        exists = dav_provider(server).get_resource_inst(path, environ) is not None
        if self.mode == "refuse" or method in ("MKCOL", "COPY", "MOVE", "PATCH"):
            if method in ("PUT", "LOCK", "PATCH") and exists:
                return None  # stored before the policy was set: may still be changed
            raise DAVError(HTTP_FORBIDDEN, f"{names[0]!r}: files of this kind are not stored here")
        if method == "PUT":
            return _discard_put(environ, start_response, exists)
        return None  # LOCK of a skipped name: no file is created (skipped_lock_target)


def skipped_lock_target(path: str, environ: Environ) -> bool:
    """Whether a missing ``path`` is locked or unlocked as a file that is never stored.

    Finder locks the ``._`` file it is about to write. With ``os_metadata: skip`` the
    provider then hands WsgiDAV a placeholder instead of creating an empty file, so the
    LOCK, its refresh and the UNLOCK work and nothing is kept.
    """
    options = environ.get("wsgidav.config", {}).get("davbackup", {})
    return (
        options.get("os_metadata") == "skip"
        and environ.get("REQUEST_METHOD") in ("LOCK", "UNLOCK")
        and is_os_metadata(_last_segment(path))
    )


def _discard_put(environ: Environ, start_response: StartResponse, exists: bool) -> list[bytes]:
    """Read the body and answer as WsgiDAV would for a stored file."""
    stream = environ["wsgi.input"]
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    remaining = None if chunked else int(environ.get("CONTENT_LENGTH") or 0)
    while remaining is None or remaining > 0:
        block = stream.read(65536 if remaining is None else min(65536, remaining))
        if not block:
            break
        if remaining is not None:
            remaining -= len(block)
    environ["wsgidav.all_input_read"] = 1
    status = "204 No Content" if exists else "201 Created"
    start_response(status, [("Content-Length", "0"), ("Date", util.get_rfc1123_time())])
    return [b""]
