"""Checks on request headers that must refuse a request before anything is stored.

* ``X-OC-Mtime`` (rclone, ownCloud clients) is honoured on PUT, MKCOL and the resume
  protocols. WsgiDAV applies it *after* the body is stored and accepts any run of
  digits, so ``10**15`` was stored and then broke every later GET and listing of the
  file (the date cannot be formatted). Here it must be 1 to 12 ASCII digits naming a
  time no later than the end of year 9999, or the request is a 400 before anything
  happens.
* A ``Destination`` whose path encodes a slash (``%2F``) is refused like such a
  request URI (see :mod:`provider.request_log`): WsgiDAV would decode it into a
  real separator.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from wsgidav.dav_error import HTTP_BAD_REQUEST, DAVError

#: the last second of year 9999 (UTC): the latest modification time accepted
MAX_MTIME = 253402300799
_MTIME = re.compile(r"[0-9]{1,12}")
_ENCODED_SLASH = re.compile(r"%2f", re.IGNORECASE)

#: methods on which an X-OC-Mtime header is applied
MTIME_METHODS = frozenset({"PUT", "MKCOL", "PATCH", "POST"})


def mtime_in_range(seconds: float) -> bool:
    """Whether ``seconds`` (since the epoch) is a modification time davbackup keeps."""
    return 0 <= seconds <= MAX_MTIME


def check_mtime_header(environ: dict[str, Any]) -> None:
    """Refuse an ``X-OC-Mtime`` that is not a plain, representable time (400)."""
    if environ.get("REQUEST_METHOD") not in MTIME_METHODS:
        return
    if not environ["wsgidav.config"].get("honor_mtime_header", False):
        return
    value = environ.get("HTTP_X_OC_MTIME")
    if value is None:
        return
    text = value.strip()
    if not _MTIME.fullmatch(text) or not mtime_in_range(int(text)):
        raise DAVError(HTTP_BAD_REQUEST, "X-OC-Mtime must be whole seconds since 1970, before year 10000")


def has_encoded_slash(url: str) -> bool:
    """Whether the path of ``url`` (a request URI or a Destination) encodes a ``/``."""
    try:
        path = urlsplit(url).path
    except ValueError:
        path = url.split("?", 1)[0]
    return bool(_ENCODED_SLASH.search(path))


def check_destination(environ: dict[str, Any]) -> None:
    """Refuse a COPY/MOVE whose Destination encodes a slash (400)."""
    destination = environ.get("HTTP_DESTINATION")
    if destination and has_encoded_slash(destination):
        raise DAVError(HTTP_BAD_REQUEST, "Destination must not contain an encoded '/' (%2F)")
