"""WsgiDAV's request server, adjusted where its behaviour is wrong for davbackup.

``RequestResolver`` builds a plain ``RequestServer`` per request; the
:class:`DavBackupRequestResolver` (last in the middleware stack) builds a
:class:`DavBackupRequestServer` instead. Its changes, each small:

* COPY/MOVE answer 201 when the destination was created. WsgiDAV answers 204
  whenever the provider handles the request natively; the resources report what
  happened in ``environ[CREATED_KEY]``.
* ``Depth: infinity`` PROPFIND is refused with 403 and ``DAV:propfind-finite-depth``
  unless the configuration allows it.
* XML request bodies (PROPFIND, PROPPATCH, LOCK) are read, size-limited (a limit
  per method: ``webdav.max_xml_body``, ``max_proppatch_body``, ``max_lock_body``) and checked
  before WsgiDAV parses them: a document type declaration (entity expansion, external
  entities) or malformed XML is refused with 400 before anything happens.
* A PUT body that cannot be read (a broken chunked encoding, a timeout) is a 400
  (408 for a timeout) instead of a 500; ``If-Match`` on a missing resource is 412.
* Lock tokens submitted for members of a collection allow a DELETE or MOVE of the
  collection (WsgiDAV ignores them; see :func:`provider.locks.check_write_locks`).
* davbackup errors become ``DAVError`` with their own status, and the hrefs of lock
  conflicts (WsgiDAV puts ref URLs there, which carry the user) become the URLs the
  client knows.
* GET/HEAD ranges are checked strictly (:mod:`provider.ranges`), and
  If-Modified-Since equal to Last-Modified is a 304 (WsgiDAV sends 200).
* ``X-OC-Mtime`` and ``Destination`` are checked before anything is stored
  (:mod:`provider.request_checks`).
* PROPPATCH ignores Depth and COPY takes ``Depth: 1`` as infinity (webdavclient3).
* PROPFIND answers are serialized compactly (:mod:`provider.propfind`): Windows
  refuses answers over 1,000,000 bytes.
* ``.DS_Store``, ``._*``, ``Thumbs.db`` and ``desktop.ini`` are stored, refused or
  skipped as configured (:class:`provider.client_compat.OsMetadataPolicy`).
* OPTIONS advertises ``DAV: 1, 2``, and to read-only users only read methods; HEAD on a collection is 200 also when the dir
  browser is off (webdavclient3 tests existence with HEAD).
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterable, Iterator
from typing import Any, Callable, TypeVar

from lxml import etree
from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CREATED,
    HTTP_NO_CONTENT,
    HTTP_NOT_MODIFIED,
    HTTP_OK,
    HTTP_PRECONDITION_FAILED,
    HTTP_REQUEST_ENTITY_TOO_LARGE,
    HTTP_REQUEST_TIMEOUT,
    DAVError,
)
from wsgidav.request_resolver import RequestResolver
from wsgidav.request_server import RequestServer

from davbackup.errors import DavBackupError
from provider import (
    propfind,
    ranges,
    resumable,  # resumable uploads (provider/resumable/)
)
from provider.auth import READ_METHODS, is_read_only
from provider.client_compat import OS_METADATA_KEY, OsMetadataPolicy
from provider.dav_provider import DavBackupProvider
from provider.errors import to_dav_error
from provider.internals import dav_provider, read_block, read_into
from provider.locks import check_write_locks
from provider.paths import ref_url_to_client_href
from provider.request_checks import check_destination, check_mtime_header
from provider.resources import CREATED_KEY

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
R = TypeVar("R")

#: Methods whose request body WsgiDAV parses as XML.
XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "LOCK"})
DEFAULT_MAX_XML_BODY = 1024 * 1024
DAV_COMPLIANCE = "1, 2"

_CLIENT_HREFS = "_davbackup_client_hrefs"
#: environ key: which path answered a PUT ("generic" here; "direct": provider/put_direct.py)
PUT_PATH_KEY = "davbackup.put"

#: methods that may add data or catalog rows, and methods that only remove
GROWING_METHODS = frozenset({"PUT", "POST", "PATCH", "MKCOL", "COPY", "MOVE", "PROPPATCH", "LOCK"})
FREEING_METHODS = frozenset({"DELETE", "UNLOCK"})


def space_gate(repo: Any, method: str) -> None:
    """The space reserve's rules (davbackup/reserve.py): a deletion on a nearly full
    disk releases it; while it is released, writes are refused with 507."""
    if method in FREEING_METHODS:
        repo.space.before_delete()
    elif method in GROWING_METHODS:
        repo.space.before_write()


class DavBackupRequestServer(RequestServer):
    """One request against the :class:`DavBackupProvider`."""

    def __init__(
        self,
        provider: DavBackupProvider,
        *,
        allow_propfind_infinite: bool = False,
        max_xml_body: int = DEFAULT_MAX_XML_BODY,
        os_metadata: OsMetadataPolicy | None = None,
        max_xml_bodies: dict[str, int] | None = None,
    ) -> None:
        super().__init__(provider)
        self.allow_propfind_infinite = allow_propfind_infinite
        self._max_xml_body = max_xml_body
        self.os_metadata = os_metadata or OsMetadataPolicy("store")
        self._max_xml_bodies = dict(max_xml_bodies or {})
        #: answer common PROPFINDs without WsgiDAV's resource objects (provider/propfind_direct.py)
        self.propfind_direct = True

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        try:
            method = environ["REQUEST_METHOD"]
            space_gate(dav_provider(self).repo, method)
            _tolerate_client_depths(environ)
            check_mtime_header(environ)
            if method in ("COPY", "MOVE"):
                check_destination(environ)
            if method in XML_METHODS:
                guard_xml_body(environ, self._max_xml_bodies.get(method, self._max_xml_body))
            elif method == "PUT":
                environ["wsgi.input"] = guarded_input(environ["wsgi.input"])
            environ[OS_METADATA_KEY] = self.os_metadata
            decided = self.os_metadata.check(self, environ, start_response)
            if decided is not None:
                yield from decided
                return
            # --- resumable uploads: range PUT, PATCH, IETF uploads (provider/resumable/) ---
            handled = resumable.dispatch(self, environ, start_response)
            if handled is not None:
                yield from handled
                return
            # --- end resumable uploads ---
            yield from super().__call__(environ, start_response)
        except DavBackupError as exc:
            raise self._client_error(to_dav_error(exc)) from exc
        except DAVError as exc:
            self._client_error(exc)  # adjusts the hrefs of the same error
            raise

    def do_PROPFIND(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """WsgiDAV's PROPFIND with a compact answer (:mod:`provider.propfind`)."""
        return propfind.do_propfind(self, environ, start_response)

    def do_GET(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        self._check_range(environ)
        return super().do_GET(environ, start_response)

    def do_HEAD(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """HEAD on a collection is 200 even without the dir browser (webdavclient3)."""
        res = dav_provider(self).get_resource_inst(environ["PATH_INFO"], environ)
        if res is not None and res.is_collection:
            return util.send_status_response(environ, start_response, HTTP_OK, is_head=True)
        self._check_range(environ)
        return super().do_HEAD(environ, start_response)

    def _check_range(self, environ: Environ) -> None:
        """Replace the Range header by what :mod:`provider.ranges` decides.

        An unsatisfiable set becomes one WsgiDAV answers with 416 and
        ``Content-Range: bytes */size`` after it evaluated the conditional headers
        (which take precedence, RFC 9110 §13.2.2).
        """
        if "HTTP_RANGE" not in environ:
            return
        res = dav_provider(self).get_resource_inst(environ["PATH_INFO"], environ)
        if res is None or res.is_collection:
            return
        size = res.get_content_length()
        decision = ranges.decide(environ["HTTP_RANGE"], size)
        if decision.unsatisfiable:
            environ["HTTP_RANGE"] = f"bytes={size}-"
        elif decision.header is None:
            del environ["HTTP_RANGE"]
        else:
            environ["HTTP_RANGE"] = decision.header

    def _evaluate_if_headers(self, res: Any, environ: Environ) -> None:  # see provider.internals.OVERRIDES
        """WsgiDAV's evaluation, except If-Modified-Since (RFC 9110 §13.1.3, §13.2.2).

        WsgiDAV answers 200 when the date equals Last-Modified, and applies the header
        to every method; it is meant for GET/HEAD only, and never with If-None-Match.
        """
        since = environ.pop("HTTP_IF_MODIFIED_SINCE", None)
        try:
            super()._evaluate_if_headers(res, environ)
        finally:
            if since is not None:
                environ["HTTP_IF_MODIFIED_SINCE"] = since
        if (
            since is None
            or res is None
            or environ["REQUEST_METHOD"] not in ("GET", "HEAD")
            or "HTTP_IF_NONE_MATCH" in environ
            or res.get_last_modified() is None
        ):
            return
        stamp = util.parse_time_string(since)
        if stamp is not None and int(res.get_last_modified()) <= stamp:
            raise DAVError(HTTP_NOT_MODIFIED)

    def do_PUT(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        environ[PUT_PATH_KEY] = "generic"
        if "HTTP_IF_MATCH" in environ:
            path = environ["PATH_INFO"]
            if dav_provider(self).get_resource_inst(path, environ) is None:
                raise DAVError(HTTP_PRECONDITION_FAILED, context_info="If-Match: no such resource")
        result = super().do_PUT(environ, start_response)
        resumable.after_whole_put(self, environ)  # resumable uploads: a whole PUT supersedes sessions
        return result

    def _check_write_permission(self, res: Any, depth: str, environ: Environ) -> None:  # internals.OVERRIDES
        """Like WsgiDAV's, but submitted tokens also unlock members (depth infinity)."""
        lock_manager = dav_provider(self).lock_manager
        if lock_manager is None or res is None:
            return
        if "wsgidav.conditions.if" not in environ:
            util.parse_if_header_dict(environ)
        check_write_locks(
            lock_manager,
            url=res.get_ref_url(),
            depth=depth,
            token_list=environ["wsgidav.ifLockTokenList"],
            principal=environ["wsgidav.user_name"],
        )

    def _send_response(  # see provider.internals.OVERRIDES
        self,
        environ: Environ,
        start_response: StartResponse,
        root_res: Any,
        success_code: int,
        error_list: list,
    ) -> Iterable[bytes]:
        created = environ.pop(CREATED_KEY, None)
        if success_code == HTTP_NO_CONTENT and created and not error_list:
            success_code = HTTP_CREATED
        for _href, error in error_list or ():
            self._client_error(error)
        return super()._send_response(
            environ, start_response, root_res, success_code, error_list
        )

    def _client_error(self, exc: DAVError) -> DAVError:
        return client_error(dav_provider(self), exc)


def client_error(provider: Any, exc: DAVError) -> DAVError:
    """Replace ref URLs in a lock-conflict condition by client hrefs (once)."""
    condition = exc.err_condition
    if condition is not None and not getattr(exc, _CLIENT_HREFS, False):
        prefix = provider.mount_path + provider.share_path
        condition.hrefs = [ref_url_to_client_href(h, prefix) for h in condition.hrefs]
        setattr(exc, _CLIENT_HREFS, True)
    return exc


class DavBackupRequestResolver(RequestResolver):
    """Dispatches requests for the davbackup share to :class:`DavBackupRequestServer`."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        options = config.get("davbackup", {})
        self._allow_infinite = bool(options.get("allow_propfind_infinity", False))
        self._propfind_direct = bool(options.get("propfind_direct", True))
        self._max_xml_body = int(options.get("max_xml_body", DEFAULT_MAX_XML_BODY))
        self._os_metadata = OsMetadataPolicy(str(options.get("os_metadata", "store")))
        self._max_xml_bodies = dict(options.get("max_xml_bodies") or {})

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        if environ["REQUEST_METHOD"] == "OPTIONS":
            start_response = _options_headers(start_response, read_only=is_read_only(environ))
        provider = environ["wsgidav.provider"]
        is_asterisk = environ["REQUEST_METHOD"] == "OPTIONS" and environ["PATH_INFO"] == "*"
        if is_asterisk or not isinstance(provider, DavBackupProvider):
            yield from super().__call__(environ, start_response)
            return
        server = DavBackupRequestServer(
            provider,
            allow_propfind_infinite=self._allow_infinite,
            max_xml_body=self._max_xml_body,
            os_metadata=self._os_metadata,
            max_xml_bodies=self._max_xml_bodies,
        )
        server.propfind_direct = self._propfind_direct
        app_iter = server(environ, start_response)
        try:
            yield from app_iter
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()


def _tolerate_client_depths(environ: Environ) -> None:
    """Accept the Depth values webdavclient3 sends (tests/interop/test_interop_webdavclient3.py).

    It sends ``Depth: 1`` with every PROPPATCH (where Depth means nothing; WsgiDAV
    answers 400) and with COPY of a collection, meaning "with its content" (RFC 4918
    allows only 0 and infinity there): treat that as infinity.
    """
    method = environ["REQUEST_METHOD"]
    depth = environ.get("HTTP_DEPTH", "").strip().lower()
    if method == "PROPPATCH" and depth:
        environ["HTTP_DEPTH"] = "0"
    elif method == "COPY" and depth == "1":
        environ["HTTP_DEPTH"] = "infinity"


def guard_xml_body(environ: Environ, limit: int) -> None:
    """Read an XML request body, refuse hostile or malformed XML, and re-present it.

    Chunked bodies are read too (WsgiDAV would ignore them). A document type
    declaration is refused outright: WebDAV never needs one, and it is how entity
    expansion ("billion laughs") and external entity attacks arrive.
    """
    body = _read_body(environ, limit)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    if not body.strip():
        return
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(body, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise DAVError(HTTP_BAD_REQUEST, "malformed XML request body") from exc
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise DAVError(HTTP_BAD_REQUEST, "XML request bodies must not declare a DTD")


def _read_body(environ: Environ, limit: int) -> bytes:
    stream = environ["wsgi.input"]
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    try:
        if chunked:
            body = stream.read(limit + 1)
            if len(body) > limit:
                raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, "XML request body too large")
        else:
            text = (environ.get("CONTENT_LENGTH") or "").strip()
            length = int(text) if text else 0
            if length < 0:
                raise DAVError(HTTP_BAD_REQUEST, "negative Content-Length")
            if length > limit:
                raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, "XML request body too large")
            body = stream.read(length) if length else b""
            if len(body) != length:
                raise DAVError(HTTP_BAD_REQUEST, "XML request body ended early")
    except ValueError as exc:
        raise DAVError(HTTP_BAD_REQUEST, "unreadable request body") from exc
    except OSError as exc:
        raise _read_error(exc) from exc
    environ["wsgidav.all_input_read"] = 1
    return body


def guarded_input(stream: Any) -> Any:
    """``wsgi.input`` of a PUT whose read errors become 400/408 instead of 500."""
    return _GuardedInput(stream)


class _GuardedInput:
    """``wsgi.input`` for PUT: read errors become 400/408 instead of 500."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        return _guarded(self._stream.read, size)

    def read_block(self, size: int) -> bytes | bytearray:
        """``read(size)``, possibly as a new bytearray the caller owns (``internals.read_block``)."""
        return _guarded(read_block, self._stream, size)

    def read_into(self, view: memoryview) -> int:
        """The next bytes into ``view`` (``internals.read_into``)."""
        return _guarded(read_into, self._stream, view)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _guarded(read: Callable[..., R], *args: Any) -> R:
    """``read(*args)``, its errors (but a DAVError) as 400/408."""
    try:
        return read(*args)
    except DAVError:
        raise
    except Exception as exc:
        raise _read_error(exc) from exc


def _read_error(exc: BaseException) -> DAVError:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return DAVError(HTTP_REQUEST_TIMEOUT, "request body timed out")
    return DAVError(HTTP_BAD_REQUEST, f"request body could not be read: {exc}")


def _options_headers(start_response: StartResponse, *, read_only: bool) -> StartResponse:
    """``DAV: 1, 2``, and for a read-only user only the methods it may use."""

    def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        adjusted = []
        for name, value in headers:
            if name.lower() == "dav" and value == "1,2":
                value = DAV_COMPLIANCE
            elif name.lower() == "allow" and read_only:
                allowed = [m.strip() for m in value.split(",")]
                value = ", ".join(m for m in allowed if m.upper() in READ_METHODS)
            adjusted.append((name, value))
        names = {name.lower() for name, _ in adjusted}
        if status.startswith("200") and not read_only and "accept-patch" not in names:
            # OPTIONS * (answered by WsgiDAV itself) advertises the upload protocols too
            adjusted.append(("Accept-Patch", resumable.ACCEPT_PATCH))
        return start_response(status, adjusted, exc_info)

    return wrapped
