"""One WebDAV server as the client sees it: listings, metadata, folders, raw requests.

The ``requests`` session of a webdavclient3 client (with the credentials set on it)
carries every request of the calling thread: listings (one ``PROPFIND`` of four
properties per folder), folders, range PUTs and ranged GETs; transfer threads get a
session of their own.
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
from lxml import etree
from webdav3.client import Client

from davbackup.client.credentials import Credentials
from davbackup.client.errors import RETRYABLE, ConnectionFailed, ServerError, error_for
from davbackup.errors import (
    Conflict,
    NotFound,
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
        """The members of the folder ``path`` (None if it is missing and ``missing_ok``).

        One ``PROPFIND`` with ``Depth: 1`` asking for the four properties used here (a
        listing of every property is several times longer, and webdavclient3 also asks
        whether the folder exists first)."""
        folder = path if path.endswith("/") else path + "/"
        try:
            response = self.request("PROPFIND", folder, data=LIST_BODY,
                                    headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
        except RETRYABLE as exc:
            raise ConnectionFailed(f"PROPFIND {self.origin}{path}: {exc}") from exc
        if response.status_code == 404:
            if missing_ok:
                return None
            raise NotFound(f"{self.origin}{path}: no such folder")
        if response.status_code != 207:
            raise error_for(response, f"PROPFIND {path}")
        try:
            root = etree.fromstring(response.content, etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError as exc:
            raise ServerError(f"PROPFIND {path}: the answer is not XML ({exc})") from exc
        base = path.rstrip("/")
        own = (base or "/").rstrip("/")
        entries = []
        for response_el in root.iterfind("{DAV:}response"):
            href = response_el.findtext("{DAV:}href") or ""
            item_path = unquote(urlsplit(href).path).rstrip("/")
            name = posixpath.basename(item_path)
            if not name or item_path == own:
                continue
            props = _ok_props(response_el)
            entries.append(RemoteEntry(
                path=f"{base}/{name}",
                name=name,
                is_dir=props.get("resourcetype") is not None
                and props["resourcetype"].find("{DAV:}collection") is not None,
                size=_int(props.get("getcontentlength")),
                etag=_strip_etag(_text(props.get("getetag"))),
                modified=_parse_http_date(_text(props.get("getlastmodified"))),
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


LIST_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
             b"<D:resourcetype/><D:getcontentlength/><D:getetag/><D:getlastmodified/></D:prop></D:propfind>")


def _ok_props(response_el: Any) -> dict[str, Any]:
    """The properties of one ``<response>`` that came with status 200, by local name."""
    found: dict[str, Any] = {}
    for propstat in response_el.iterfind("{DAV:}propstat"):
        status = propstat.findtext("{DAV:}status") or ""
        if " 200 " not in status + " ":
            continue
        prop = propstat.find("{DAV:}prop")
        for el in prop if prop is not None else ():
            if isinstance(el.tag, str) and el.tag.startswith("{DAV:}"):
                found[el.tag[6:]] = el
    return found


def _text(el: Any) -> str | None:
    return None if el is None else (el.text or "")


def _int(el: Any) -> int:
    try:
        return int((el.text or "0").strip()) if el is not None else 0
    except ValueError:
        return 0


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
