"""davbackup's web page: the folder listing and the "connect a drive" page.

WsgiDAV's dir browser middleware answers GET on a collection; this subclass keeps
its plumbing (``?davmount``, the public ``/:dir_browser`` asset share, the ignore
list) and replaces the page with davbackup's own templates in
``provider/templates`` (served as the assets too):

* ``template.html``: the listing, with breadcrumbs, the user's name, access and
  usage, and a sign-out hint. WsgiDAV decides "read-only" per provider, davbackup
  per user (role ``ro``).
* ``connect.html`` (``GET <folder>/?connect``): the folder's address and the steps
  to connect it as a drive, the visitor's platform (from the User-Agent) first.

Usage is the catalog's count of the user's live bytes (what the quota limits), with
the quota when one is set.

WsgiDAV 4.4's dir browser builds its own errors (a GET of a folder with a body is a
415) with a ``DAVError`` call that does not match ``DAVError``'s signature, so such
a request ended in a 500; the ``_fail`` override here raises them correctly.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import quote, unquote

from wsgidav import util
from wsgidav.dav_error import DAVError
from wsgidav.dir_browser import WsgiDavDirBrowser

from provider.auth import is_read_only

if TYPE_CHECKING:
    from provider.dav_provider import DavBackupProvider

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

TEMPLATES = Path(__file__).resolve().parent / "templates"

PLATFORMS = [
    ("windows", "Windows Explorer"),
    ("macos", "macOS Finder"),
    ("linux", "Linux: GNOME Files, KDE Dolphin, davfs2, rclone"),
    ("ios", "iPhone and iPad"),
    ("android", "Android"),
]


def detect_platform(user_agent: str) -> str:
    """The visitor's platform key (see :data:`PLATFORMS`) from a User-Agent header."""
    ua = user_agent.lower()
    if "iphone" in ua or "ipad" in ua:
        return "ios"
    if "android" in ua:
        return "android"
    if "windows" in ua:
        return "windows"
    if "macintosh" in ua or "mac os x" in ua:
        return "macos"
    if "linux" in ua or "x11" in ua or "cros" in ua:
        return "linux"
    return "other"


def human_size(size: int) -> str:
    """``1.5 MB`` style (decimal units, as file managers show them)."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.5 or unit == "PB":
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


class DavBackupDirBrowser(WsgiDavDirBrowser):
    """The dir browser with davbackup's pages."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self._connect = self.template.environment.get_template("connect.html")

    def __call__(self, environ: Environ, start_response: StartResponse) -> Any:
        if (
            environ["REQUEST_METHOD"] == "GET"
            and environ.get("QUERY_STRING", "") == "connect"
            and not self.is_disabled()
            and environ["PATH_INFO"].endswith("/")
        ):
            provider = environ["wsgidav.provider"]
            res = provider.get_resource_inst(environ["PATH_INFO"], environ) if provider else None
            if res is not None and res.is_collection:
                return self._connect_page(environ, start_response, res)
        query = environ.get("QUERY_STRING", "")
        if environ["REQUEST_METHOD"] == "GET" and query.startswith("asof=") and not self.is_disabled():
            return self._as_of(environ, start_response, query)
        return super().__call__(environ, start_response)

    # --- history: "this folder as it was on ..." ----------------------------------------

    def _as_of(self, environ: Environ, start_response: StartResponse, query: str) -> list[bytes]:
        """``GET <folder>/?asof=2026-12-01T12:00`` (a date field, UTC) redirects to the
        folder in ``/.history/<T>/``."""
        value = unquote(query[len("asof="):].split("&", 1)[0].replace("+", " ")).strip()
        try:
            moment = as_of_moment(value)
        except ValueError:
            body = f"not a date and time: {value!r} (use YYYY-MM-DDTHH:MM, UTC)".encode()
            start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"),
                                               ("Content-Length", str(len(body)))])
            return [body]
        path = environ["PATH_INFO"]
        live = live_path(path)
        location = f"{environ.get('SCRIPT_NAME', '')}/.history/{moment}{quote(live)}"
        start_response("302 Found", [("Location", location), ("Content-Length", "0"),
                                     ("Cache-Control", "no-store")])
        return [b""]

    # --- the listing ----------------------------------------------------------------

    def _get_context(self, environ: Environ, dav_res: Any) -> dict[str, Any]:  # internals.OVERRIDES
        context = super()._get_context(environ, dav_res)
        if is_read_only(environ):
            context["is_readonly"] = True
            context["access"] = "read-only"
        for row in context["rows"]:
            row["human_size"] = "" if row["is_collection"] else human_size(
                int(row.get("content_length") or 0))
            modified = row.get("last_modified")
            row["human_modified"] = (
                "" if modified is None
                else time.strftime("%Y-%m-%d %H:%M", time.gmtime(modified)))
        context.update(self._account(environ))
        context["crumbs"] = _crumbs(dav_res.get_href())
        context["history"] = history_context(unquote(dav_res.get_href()), context["rows"])
        return context

    def _account(self, environ: Environ) -> dict[str, Any]:
        user = environ.get("wsgidav.auth.user_name")
        if not user:
            return {"user_name": None, "usage": None}
        provider: DavBackupProvider = environ["wsgidav.provider"]
        ns = provider.namespace(environ)
        used, quota = ns.usage()
        usage = human_size(used) if quota is None else f"{human_size(used)} of {human_size(quota)}"
        kept = provider.repo.history_usage(ns.root_id)
        return {
            "user_name": user,
            "access": "read-only" if is_read_only(environ) else "read-write",
            "usage": usage,
            "history_size": human_size(kept.bytes),
        }

    # --- the connect page -----------------------------------------------------------

    def _connect_page(self, environ: Environ, start_response: StartResponse,
                      dav_res: Any) -> list[bytes]:
        scheme = environ.get("wsgi.url_scheme", "http")
        host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
        href = dav_res.get_href()
        detected = detect_platform(environ.get("HTTP_USER_AGENT", ""))
        platforms = sorted(PLATFORMS, key=lambda p: p[0] != detected)
        dav = "davs" if scheme == "https" else "dav"
        kde = "webdavs" if scheme == "https" else "webdav"
        context = {
            "htdocs": self.mount_path + "/:dir_browser",
            "url": href,
            "display_path": unquote(href),
            "dav_url": f"{scheme}://{host}{href}",
            "root_url": f"{scheme}://{host}/",
            "gnome_url": f"{dav}://{host}{href}",
            "kde_url": f"{kde}://{host}{href}",
            "secure": scheme == "https",
            "platform": detected,
            "platforms": [{"key": key, "title": title} for key, title in platforms],
            **self._account(environ),
        }
        body = util.to_bytes(self._connect.render(**context))
        start_response("200 OK", [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "private"),
            ("Date", util.get_rfc1123_time()),
        ])
        return [body]


    def _fail(self, value: int, context_info: Any = None, src_exception: Any = None,
              err_condition: Any = None) -> None:
        raise DAVError(value, context_info, src_exception=src_exception, err_condition=err_condition)


def _crumbs(href: str) -> list[dict[str, str]]:
    """``[{name, href}]`` from the root to the folder ``href`` (quoted, ends in /)."""
    crumbs = [{"name": "Home", "href": "/"}]
    parts = [p for p in href.split("/") if p]
    for i, part in enumerate(parts):
        crumbs.append({"name": unquote(part),
                       "href": "/" + "/".join(parts[: i + 1]) + "/"})
    return crumbs



def as_of_moment(value: str) -> str:
    """A date field's value (``2026-12-01T12:00``, seconds optional, UTC) as a point in
    time's name (``2026-12-01T120000Z``)."""
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            moment = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return moment.strftime("%Y-%m-%dT%H%M%SZ")
    raise ValueError(value)


def live_path(path: str) -> str:
    """The live folder a page of history shows (``/.history/<T>/a/`` -> ``/a/``)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == [".history"]:
        parts = parts[2:]
    elif parts[:1] == [".versions"]:
        parts = parts[1:]
    return "/" + "/".join(parts) + ("/" if parts else "")


def history_context(path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the page says and links about history (DESIGN.md §15), by where it is."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == [".history"]:
        if len(parts) == 1:
            return {"kind": "points", "banner": "Every point in time at which your files changed (UTC)"}
        return {"kind": "point", "banner": f"Your files as they were at {parts[1]} (UTC)",
                "live_href": quote(live_path(path))}
    if parts[:1] == [".versions"]:
        return {"kind": "versions", "banner": "Older versions: open one to download it",
                "live_href": quote(live_path(path))}
    for row in rows:
        if not row["is_collection"]:
            href = row["href"] if row["href"].startswith("/") else quote(path) + row["href"]
            row["versions_href"] = "/.versions" + href.rstrip("/") + "/"
    return {"kind": "live", "versions_href": "/.versions" + quote(path)}
