"""PUT's direct path: a plain whole-file PUT handled in one place.

WsgiDAV answers a PUT after the dir browser has looked the path up, a request server
has been built, the target and its parent have become resource objects, the locks
have been checked twice and a placeholder resource has been made for a new file. For
a 4 KiB file that machinery costs about as much as storing it. This middleware sits
right after the authenticator (so logins, throttling and read-only users are
handled exactly as before) and answers the common case itself:

* the request: ``PUT`` of a file path (no trailing ``/``), a user's own tree (not
  history, not the reserved upload prefix, not a file the ``os_metadata`` policy
  refuses or skips), no ``Content-Range``, ``Upload-Complete``, ``Content-Encoding``
  or conditional header (``If``, ``If-Match``, ``If-None-Match``,
  ``If-Modified-Since``, ``If-Unmodified-Since``);
* the state: the parent is a folder, the target is not one, no lock at the target or
  on any folder above it, and the announced body fits the quota.

Anything else goes on to WsgiDAV unchanged, before a byte of the body is read, and is
answered as it always was (the errors of every case above come from there). What the
direct path does is what :class:`provider.request_server.DavBackupRequestServer` and
WsgiDAV's ``do_PUT`` do for such a request, in the same order: the space reserve,
the ``X-OC-Mtime`` check, digests, the quota check, the body streamed into the store
under the lock manager's write transaction (so no LOCK is granted while the body
arrives), the length check, the commit, ``X-OC-Mtime`` applied, upload sessions of
the path dropped, and ``201``/``204`` with the ETag and WsgiDAV's status page.
``tests/provider/test_provider_put_direct.py`` sends the same PUTs to a server with
the direct path and one without and compares the answers and what was stored;
``webdav.put_direct: false`` turns it off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Callable

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_CREATED, HTTP_INTERNAL_ERROR, HTTP_NO_CONTENT, DAVError
from wsgidav.mw.base_mw import BaseMiddleware

from davbackup.body_segments import SEGMENT_BYTES
from davbackup.errors import DavBackupError
from davbackup.fs import Entry, Namespace
from provider import history, internals, resumable
from provider.client_compat import OS_METADATA_KEY, OsMetadataPolicy, is_os_metadata
from provider.dav_provider import DavBackupProvider
from provider.digests import parse_digests
from provider.errors import dav_errors, to_dav_error
from provider.header_text import HeaderTexts, StatusPage
from provider.paths import ref_url
from provider.request_checks import check_mtime_header
from provider.request_server import PUT_PATH_KEY, client_error, guarded_input, space_gate
from provider.resources import BodyWriter, check_room, expected_body_size

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

_log = logging.getLogger(__name__)


#: request headers that send a PUT the generic way
_GENERIC_HEADERS = (
    "HTTP_CONTENT_RANGE", "HTTP_UPLOAD_COMPLETE", "HTTP_CONTENT_ENCODING", "HTTP_IF", "HTTP_IF_MATCH",
    "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE",
)


class DirectPut(BaseMiddleware):
    """WsgiDAV middleware (after the authenticator) answering plain PUTs itself."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        options = config.get("davbackup", {})
        self.enabled = bool(options.get("put_direct", True))
        self.policy = OsMetadataPolicy(str(options.get("os_metadata", "store")))
        self.block_size = int(config.get("block_size") or 1024 * 1024)
        self.honor_mtime = bool(config.get("honor_mtime_header", False))
        self._texts = HeaderTexts(config)
        self._created = StatusPage(HTTP_CREATED)
        self._status_created = util.get_http_status_string(HTTP_CREATED)
        self._status_no_content = util.get_http_status_string(HTTP_NO_CONTENT)

    def is_disabled(self) -> bool:
        """``webdav.put_direct: false``: WsgiDAV leaves the middleware out of its stack."""
        return not self.enabled

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "PUT":
            return self.next_app(environ, start_response)
        target = self._target(environ)
        if target is None:
            return self.next_app(environ, start_response)
        provider, user, path = target
        try:
            answer = self._put(environ, start_response, provider, user, path)
        except DavBackupError as exc:
            raise client_error(provider, to_dav_error(exc)) from exc
        except DAVError as exc:
            raise client_error(provider, exc) from None
        if answer is None:
            return self.next_app(environ, start_response)
        return answer

    def _target(self, environ: Environ) -> tuple[DavBackupProvider, str, str] | None:
        """(provider, user, path) if the request itself is one the direct path takes."""
        provider = environ.get("wsgidav.provider")
        user = environ.get("wsgidav.auth.user_name")
        path = environ["PATH_INFO"]
        if type(provider) is not DavBackupProvider or not user or not path.startswith("/") or path.endswith("/"):
            return None
        if any(name in environ for name in _GENERIC_HEADERS):
            return None
        if history.is_history_path(path) or resumable.is_reserved(path):
            return None
        if self.policy.mode != "store" and is_os_metadata(path.rsplit("/", 1)[-1]):
            return None
        return provider, str(user), path

    def _put(self, environ: Environ, start_response: StartResponse, provider: DavBackupProvider, user: str,
             path: str) -> list[bytes] | None:
        """The answer, or None (nothing read, nothing changed) to let WsgiDAV answer.

        Only what the generic path would raise at the same point is raised here; every
        other check that fails sends the request on, where it fails in its own order.
        """
        try:  # the dir browser's lookup comes first there
            ns = provider.namespace(environ)
            existing, parent_is_folder = ns.lookup_for_write(path)
        except (DavBackupError, DAVError):
            return None  # an invalid name, a removed user, a catalog error: answered there
        if not parent_is_folder or (existing is not None and existing.is_dir):
            return None  # no parent folder, or a folder there: answered there
        # --- what the request server does first (provider.request_server) ---
        space_gate(provider.repo, "PUT")
        check_mtime_header(environ)
        mtime = environ.get("HTTP_X_OC_MTIME")
        if self.honor_mtime and mtime is not None and not mtime.isdigit():
            return None  # WsgiDAV's own check of the header: 400 there
        # --- locks, digests, quota ---
        lock_manager = provider.lock_manager
        url = ref_url(user, path, is_collection=False)
        if lock_manager is not None and _locked_at_or_above(lock_manager.storage, url):
            return None
        try:
            digests = parse_digests(environ)
            expected = expected_body_size(environ)
        except DAVError:
            return None  # a malformed header: 400 there, after the checks that precede it
        if not check_room(ns, expected, existing.size if existing is not None else 0):
            return None  # 507, with its message, there
        try:
            pending = ns.open_write(path, looked=True)  # the parent is a folder, the target none (above)
        except DavBackupError:
            return None
        environ["wsgidav.user_name"] = user
        environ[OS_METADATA_KEY] = self.policy
        environ[PUT_PATH_KEY] = "direct"

        # --- the body, under the lock manager's write transaction (as WsgiDAV's PUT) ---
        writer = BodyWriter(pending, digests, path)
        stream = guarded_input(environ["wsgi.input"])
        if lock_manager is None:
            entry = self._store(environ, writer, path, stream, expected)
        else:
            try:
                marked = internals.begin_write(lock_manager, url, user)
            except DAVError:
                writer.abort()  # a lock granted since the check above (423): nothing was read
                raise
            try:
                entry = self._store(environ, writer, path, stream, expected)
            except DAVError:
                writer.abort()  # as before: whatever failed, nothing of it stays
                raise
            finally:
                internals.end_write(lock_manager, marked)
        provider.forget(environ)
        return self._answer(environ, start_response, provider, ns, user, entry, mtime, created=existing is None)

    def _answer(self, environ: Environ, start_response: StartResponse, provider: DavBackupProvider, ns: Namespace,
                user: str, entry: Entry, mtime: str | None, *, created: bool) -> list[bytes]:
        """After the commit, as WsgiDAV's PUT and the request server: X-OC-Mtime, the
        upload sessions of the path dropped, 201 or 204 with the ETag."""
        headers = [("ETag", f'"{util.checked_etag(entry.etag)}"')]
        if self.honor_mtime and mtime is not None:
            with dav_errors():
                ns.set_modified(entry.path, float(int(mtime)))
        resumable.discard_sessions(provider, user, entry.path)
        # util.send_status_response(environ, start_response, 201 or 204, add_headers=headers),
        # with the Date text made once a second and the 201 page from its template
        if not created:
            start_response(self._status_no_content, [("Content-Length", "0"), ("Date", self._texts.now()), *headers])
            return [b""]
        body = self._created.body()
        start_response(self._status_created, [
            ("Content-Type", self._created.content_type), ("Date", self._texts.now()),
            ("Content-Length", str(len(body))), *headers,
        ])
        return [body]

    def _store(self, environ: Environ, writer: BodyWriter, path: str, stream: Any, expected: int | None) -> Any:
        """Stream the body into the new version and commit it (WsgiDAV's ``begin_write``
        ... ``end_write``)."""
        block_size = self.block_size
        try:
            if expected is not None and expected > SEGMENT_BYTES:  # large: into the chunker's segments
                while writer.fill(stream):
                    environ["wsgidav.some_input_read"] = 1
            else:
                while True:
                    data = stream.read_block(block_size)
                    if not data:
                        break
                    environ["wsgidav.some_input_read"] = 1
                    writer.write(data, owned=True)
            environ["wsgidav.all_input_read"] = 1
        except Exception as exc:
            writer.abort()
            _log.debug("PUT %s: the body could not be stored: %s", path, exc)
            raise exc if isinstance(exc, DAVError) else DAVError(HTTP_INTERNAL_ERROR, src_exception=exc) from exc
        if expected is not None and writer.received != expected:
            writer.abort()
            raise DAVError(
                HTTP_BAD_REQUEST,
                f"body of {path!r} had {writer.received} of {expected} announced bytes; nothing was stored",
            )
        with dav_errors():
            return writer.commit(expected)


def _locked_at_or_above(storage: Any, url: str) -> bool:
    """Whether any lock (of any depth and owner) sits on ``url`` or a folder above it."""
    if not storage.holds_any():
        return False
    while url:
        if storage.get_lock_list(url, include_root=True, include_children=False, token_only=True):
            return True
        url = util.get_uri_parent(url)
    return False
