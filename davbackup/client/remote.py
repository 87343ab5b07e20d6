"""One WebDAV server as the client sees it: listings, metadata, folders, raw requests.

Listing and metadata go through webdavclient3; its ``requests`` session (with the
credentials set on it) also carries the range PUTs and ranged GETs, so every request
shares one connection pool.
"""

from __future__ import annotations

import builtins
import email.utils
import importlib.metadata
import posixpath
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests
from webdav3.client import Client
from webdav3.exceptions import (
    MethodNotSupported,
    NoConnection,
    RemoteResourceNotFound,
    ResourceLocked,
    ResponseErrorCode,
    WebDavException,
)

from davbackup.client.credentials import Credentials
from davbackup.client.errors import RETRYABLE, ConnectionFailed, ServerError, error_for
from davbackup.errors import (
    AuthenticationFailed,
    Conflict,
    DavBackupError,
    Locked,
    NotFound,
    PermissionDenied,
    StorageFull,
    UsageError,
)

try:
    _version = importlib.metadata.version("davbackup")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    _version = "dev"

#: (connect, read) seconds; a part of 64 MiB over a slow link needs a long read timeout
TIMEOUT = (15.0, 600.0)


@dataclass(frozen=True)
class RemoteEntry:
    path: str  # unquoted, no trailing slash ("/" for the root)
    name: str
    is_dir: bool
    size: int
    etag: str | None  # without quotes
    modified: float | None  # seconds since the epoch


def split_url(url: str) -> tuple[str, str]:
    """``("http://host:port", "/unquoted/path")`` of a URL; the path never ends in ``/``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise UsageError("put the user in --user and the password in $DAVBACKUP_PASSWORD or netrc, not in the URL")
    path = posixpath.normpath("/" + unquote(parts.path).lstrip("/"))
    return f"{parts.scheme}://{parts.netloc}", "/" if path in ("/", "//", ".") else path.rstrip("/")


def join(path: str, name: str) -> str:
    return (path.rstrip("/") or "") + "/" + name


class Remote:
    """A server origin (``http(s)://host:port``) with credentials."""

    def __init__(self, origin: str, credentials: Credentials, *, verify: bool | str = True) -> None:
        self.origin = origin.rstrip("/")
        self.user = credentials.user
        self.client = Client({
            "webdav_hostname": self.origin,
            "webdav_login": credentials.user,
            "webdav_password": credentials.password,
            "webdav_timeout": int(TIMEOUT[1]),
        })
        self.client.verify = verify
        self.session: requests.Session = self.client.session
        self.session.auth = (credentials.user, credentials.password)
        self.session.verify = verify
        self.session.headers["User-Agent"] = f"davbackup-client/{_version}"
        self._known_dirs: set[str] = {"/"}
        self._owner = threading.get_ident()
        self._local = threading.local()  # one session (connection pool) per transfer thread

    # --- addressing ----------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.origin + quote(path)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A raw request; connection failures propagate (the caller retries). Safe to
        call from several threads: each has its own session (and connections)."""
        kwargs.setdefault("timeout", TIMEOUT)
        return self._session().request(method, self.url(path), **kwargs)

    def _session(self) -> requests.Session:
        if threading.get_ident() == self._owner:
            return self.session
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.auth = self.session.auth
            session.verify = self.session.verify
            session.headers.update(self.session.headers)
        return session

    # --- metadata ------------------------------------------------------------------

    def stat(self, path: str) -> RemoteEntry | None:
        """The entry at ``path``, or None if there is nothing."""
        parent, name = posixpath.split(path.rstrip("/") or "/")
        if path in ("", "/"):
            return RemoteEntry("/", "", True, 0, None, None)
        for entry in self.list(parent, missing_ok=True) or []:
            if entry.name == name:
                return entry
        return None

    def list(self, path: str, *, missing_ok: bool = False) -> list[RemoteEntry] | None:
        """The members of the folder ``path`` (None if it is missing and ``missing_ok``)."""
        try:
            infos = self.client.list(path if path.endswith("/") else path + "/", get_info=True)
        except RemoteResourceNotFound:
            if missing_ok:
                return None
            raise NotFound(f"{self.origin}{path}: no such folder") from None
        except WebDavException as exc:
            raise self._translate(exc, f"PROPFIND {path}") from exc
        entries = []
        base = path.rstrip("/")
        for info in infos:
            item_path = (info.get("path") or "").rstrip("/")
            name = posixpath.basename(item_path)
            if not name:
                continue
            entries.append(RemoteEntry(
                path=f"{base}/{name}",
                name=name,
                is_dir=bool(info.get("isdir")),
                size=int(info.get("size") or 0),
                etag=_strip_etag(info.get("etag")),
                modified=_parse_http_date(info.get("modified")),
            ))
        entries.sort(key=lambda e: e.name)
        return entries

    def walk(self, path: str) -> builtins.list[RemoteEntry]:
        """Every entry below the folder ``path``, parents before children."""
        result: builtins.list[RemoteEntry] = []
        for entry in self.list(path) or []:
            result.append(entry)
            if entry.is_dir:
                result.extend(self.walk(entry.path))
        return result

    # --- folders -------------------------------------------------------------------

    def known_dir(self, path: str) -> None:
        """Remember that the folder ``path`` exists (seen in a listing)."""
        self._known_dirs.add(path)

    def makedirs(self, path: str) -> bool:
        """Create ``path`` and its missing parents (MKCOL; 405 means it exists).
        True if ``path`` itself was created now (so it is empty)."""
        if path in self._known_dirs:
            return False
        parent = posixpath.dirname(path.rstrip("/")) or "/"
        self.makedirs(parent)
        try:
            response = self.request("MKCOL", path)
        except RETRYABLE as exc:
            raise ConnectionFailed(f"MKCOL {self.origin}{path}: {exc}") from exc
        if response.status_code not in (201, 405):
            raise error_for(response, f"MKCOL {path}")
        if response.status_code == 405:
            entry = self.stat(path)
            if entry is None or not entry.is_dir:
                raise Conflict(f"{path}: a file stands where a folder is needed")
        self._known_dirs.add(path)
        return response.status_code == 201

    def _translate(self, exc: WebDavException, what: str) -> DavBackupError:
        if isinstance(exc, NoConnection) or "Connection" in type(exc).__name__:
            return ConnectionFailed(f"{what}: cannot reach {self.origin} ({exc})")
        if isinstance(exc, ResourceLocked):
            return Locked(f"{what}: locked")
        if isinstance(exc, MethodNotSupported):
            return Conflict(f"{what}: not allowed here")
        if isinstance(exc, ResponseErrorCode):
            code = int(exc.code)
            if code == 401:
                return AuthenticationFailed(f"{what}: the server refused the user name or password (401)")
            if code == 403:
                return PermissionDenied(f"{what}: forbidden (403)")
            if code == 507:
                return StorageFull(f"{what}: the server is out of space (507)")
            if code >= 500:
                return ServerError(f"{what}: server error {code}")
            return DavBackupError(f"{what}: {code}")
        return ServerError(f"{what}: {exc}")


def _strip_etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def _parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
