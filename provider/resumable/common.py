"""What the three resume protocols share: constants, the checks WsgiDAV's PUT makes,
finishing an upload, and small readers of the request environ."""

from __future__ import annotations

import base64
import logging
from typing import Any

from wsgidav import util
from wsgidav.dav_error import HTTP_CONFLICT, HTTP_METHOD_NOT_ALLOWED, HTTP_PRECONDITION_FAILED, DAVError

from davbackup.digests import Digests
from davbackup.errors import DavBackupError
from davbackup.uploads import UploadSession
from provider.internals import check_write_permission, dav_provider, evaluate_if_headers
from provider.resources import PendingFile
from provider.resumable.answers import RECENT, Done, Headers, StartResponse, respond

_log = logging.getLogger("provider.resumable")

Environ = dict[str, Any]

UPLOAD_PREFIX = "/.well-known/davbackup-uploads"
SABRE_TYPE = "application/x-sabredav-partialupdate"
PARTIAL_UPLOAD_TYPE = "application/partial-upload"
ACCEPT_PATCH = f"{PARTIAL_UPLOAD_TYPE}, {SABRE_TYPE}"
PROTOCOL_RANGE = "range"
PROTOCOL_IETF = "ietf"


def is_reserved(path: str) -> bool:
    """Whether ``path`` lies in the prefix reserved for upload resources (empty and
    ``.`` segments do not count: the catalog ignores them too)."""
    path = "/" + "/".join(p for p in path.split("/") if p not in ("", "."))
    return path == UPLOAD_PREFIX or path.startswith(UPLOAD_PREFIX + "/")


def check_target(server: Any, environ: Environ, path: str, *, evaluate_if: bool = True) -> tuple[Any, Any]:
    """What WsgiDAV's PUT checks: not a collection, parent exists, If headers, locks.

    Returns the existing resource (or None) and the resource to hold the write
    transaction on (a placeholder for a new file).
    """
    provider = dav_provider(server)
    res = provider.get_resource_inst(path, environ)
    if res is not None and res.is_collection:
        raise DAVError(HTTP_METHOD_NOT_ALLOWED, "cannot upload to a collection")
    parent = provider.get_resource_inst(util.get_uri_parent(path), environ)
    if parent is None or not parent.is_collection:
        raise DAVError(HTTP_CONFLICT, "the parent must be an existing collection")
    if evaluate_if:
        if res is None and "HTTP_IF_MATCH" in environ:
            raise DAVError(HTTP_PRECONDITION_FAILED, "If-Match: no such resource")
        evaluate_if_headers(server, res, environ)
    if res is None:
        check_write_permission(server, parent, "0", environ)
        return None, PendingFile(path, environ)
    check_write_permission(server, res, "0", environ)
    return res, res


def finished(server: Any, environ: Environ, session: UploadSession, entry: Any) -> None:
    """After the last byte: the client's mtime, fresh listings, and :data:`RECENT`."""
    provider = dav_provider(server)
    mtime = oc_mtime(environ) or session.meta.get("mtime")
    if mtime is not None and environ["wsgidav.config"].get("honor_mtime_header", False):
        try:
            provider.namespace(environ).set_modified(session.path, float(mtime))
        except DavBackupError as exc:
            _log.warning("upload of %s: could not set mtime: %s", session.path, exc.message)
    provider.forget(environ)
    key = ("ietf", session.user, session.id) if session.protocol == PROTOCOL_IETF \
        else ("range", session.user, session.path)
    RECENT.add(key, Done(entry.size, entry.etag, session.meta.get("sha256")))


def completed(start_response: StartResponse, entry: Any, is_new: bool, extra: Headers) -> list[bytes]:
    """201 (a new file) or 204 (a new version) with the ETag."""
    return respond(start_response, 201 if is_new else 204, [("ETag", f'"{entry.etag}"')] + extra)


def session_meta(environ: Environ, digests: Digests | None) -> dict[str, Any]:
    """What a session keeps from its first request: digests and the client's mtime."""
    meta: dict[str, Any] = {}
    if digests and digests.sha256:
        meta["sha256"] = base64.b64encode(digests.sha256).decode("ascii")
    if digests and digests.sha1:
        meta["sha1"] = digests.sha1.hex()
    mtime = oc_mtime(environ)
    if mtime is not None:
        meta["mtime"] = mtime
    return meta


def meta_digests(session: UploadSession) -> Digests | None:
    sha256 = session.meta.get("sha256")
    sha1 = session.meta.get("sha1")
    if not sha256 and not sha1:
        return None
    return Digests(sha256=base64.b64decode(sha256) if sha256 else None,
                   sha1=bytes.fromhex(sha1) if sha1 else None)


def oc_mtime(environ: Environ) -> int | None:
    value = environ.get("HTTP_X_OC_MTIME", "").strip()
    return int(value) if value.isdigit() and len(value) <= 18 else None


def content_length(environ: Environ) -> int | None:
    """The body length: None for a chunked body, 0 when no Content-Length was sent."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    value = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not value:
        return 0
    if not value.isdigit() or len(value) > 18:
        raise DAVError(400, f"invalid Content-Length {value[:40]!r}")
    return int(value)


def has_content_length(environ: Environ) -> bool:
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return not chunked and bool(str(environ.get("CONTENT_LENGTH") or "").strip())


def media_type(environ: Environ) -> str:
    return str(environ.get("CONTENT_TYPE", "")).split(";", 1)[0].strip().lower()
