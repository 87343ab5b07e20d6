"""GET's direct path: a plain GET of a file, whole or one byte range, answered in one place.

For a GET WsgiDAV has the dir browser look the path up, builds a request server and
a resource, checks the range twice (:mod:`provider.ranges`, then its own parser)
and opens the content, which resolves the path once more. For a ranged GET of 4 KiB
that costs about as much as reading and verifying the chunk around it. This
middleware (after the authenticator, beside :mod:`provider.put_direct`) answers

* ``GET`` of a file path (no trailing ``/``, no query, not history, not the upload
  prefix), with no request body, ``Depth`` or conditional header (``If``,
  ``If-Match``, ``If-None-Match``, ``If-Modified-Since``, ``If-Unmodified-Since``,
  ``If-Range``), of a file that is not empty when a ``Range`` is asked;
* with no ``Range``, or one that :func:`provider.ranges.decide` turns into a single
  satisfiable range (several ranges and an unsatisfiable set take the generic way).

It sends what WsgiDAV's ``_send_resource`` sends, header for header in its order:
``Content-Length``, ``Last-Modified``, ``Content-Type``, ``Date``, ``ETag``,
``Accept-Ranges``, and ``Content-Range`` with ``206``; the body is read from the
version's verified reader in chunk-sized steps. One lookup gives the entry and its
version, whose chunk list the repository has verified (and keeps). Everything else
goes on to WsgiDAV unchanged. ``tests/provider/test_provider_get_direct.py`` sends
the same GETs to a server with the direct path and one without and compares;
``webdav.get_direct: false`` turns it off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Callable

from wsgidav import util
from wsgidav.dav_error import DAVError
from wsgidav.mw.base_mw import BaseMiddleware

from davbackup.errors import DavBackupError
from provider import history, ranges, resumable
from provider.dav_provider import DavBackupProvider
from provider.errors import dav_errors
from provider.header_text import HeaderTexts
from provider.resources import ChunkAlignedReader

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

#: environ key: set to "direct" when this path answered a GET
PATH_KEY = "davbackup.get"

#: request headers that send a GET the generic way
_GENERIC_HEADERS = (
    "HTTP_IF", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_IF_RANGE", "HTTP_DEPTH", "HTTP_TRANSFER_ENCODING",
)


class DirectGet(BaseMiddleware):
    """WsgiDAV middleware (after the authenticator) answering plain GETs of files itself."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self.enabled = bool(config.get("davbackup", {}).get("get_direct", True))
        self.block_size = int(config.get("block_size") or 1024 * 1024)
        self.texts = HeaderTexts(config)

    def is_disabled(self) -> bool:
        """``webdav.get_direct: false``: WsgiDAV leaves the middleware out of its stack."""
        return not self.enabled

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "GET":
            return self.next_app(environ, start_response)
        answer = self._get(environ, start_response)
        return self.next_app(environ, start_response) if answer is None else answer

    def _get(self, environ: Environ, start_response: StartResponse) -> Iterator[bytes] | None:
        provider = environ.get("wsgidav.provider")
        user = environ.get("wsgidav.auth.user_name")
        path = environ["PATH_INFO"]
        if (type(provider) is not DavBackupProvider or not user or not path.startswith("/") or path.endswith("/")
                or environ.get("QUERY_STRING") or environ.get("CONTENT_LENGTH", "0") not in ("", "0")):
            return None
        if any(name in environ for name in _GENERIC_HEADERS):
            return None
        if history.is_history_path(path) or resumable.is_reserved(path):
            return None
        try:
            ns = provider.namespace(environ)
            entry = ns.lookup(path)
        except (DavBackupError, DAVError):
            return None
        if entry is None or entry.is_dir or entry.version_id is None:
            return None
        size = entry.size
        first, last, partial = 0, size - 1, False
        wanted = environ.get("HTTP_RANGE")
        if wanted is not None:
            if size == 0:
                return None
            decision = ranges.decide(wanted, size)
            if decision.unsatisfiable:
                return None
            if decision.span is not None:  # one range, canonical: what WsgiDAV's parser makes of it
                first, last = decision.span
                partial = True
        environ["wsgidav.user_name"] = user
        environ[PATH_KEY] = "direct"
        length = last - first + 1
        etag = util.checked_etag(entry.etag, allow_none=True)
        headers = [
            ("Content-Length", str(length)),
            ("Last-Modified", self.texts.date(entry.modified)),
            ("Content-Type", self.texts.mime_type(entry.name)),
            ("Date", self.texts.now()),
            ("ETag", f'"{etag if etag is not None else "[]"}"'),
            ("Accept-Ranges", "bytes"),
        ]
        with dav_errors():
            reader = ChunkAlignedReader(ns.version_reader(entry.version_id, size, entry.etag, entry.path))
        if partial:
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
            start_response("206 Partial Content", headers)
        else:
            start_response("200 OK", headers)
        return self._body(reader, first, length)

    def _body(self, reader: ChunkAlignedReader, first: int, length: int) -> Iterator[bytes]:
        """The bytes, as WsgiDAV's ``_send_resource`` reads them (never past a chunk)."""
        try:
            reader.seek(first)
            reader.expect(first + length)
            remaining = length
            block_size = self.block_size
            while True:
                data = reader.read(block_size if remaining > block_size else remaining)
                yield data
                remaining -= len(data)
                if not data or remaining == 0:
                    break
        finally:
            reader.close()
