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
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from wsgidav import util
from wsgidav.dir_browser import WsgiDavDirBrowser

from provider.auth import is_read_only

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
        return super().__call__(environ, start_response)

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
        return context

    def _account(self, environ: Environ) -> dict[str, Any]:
        user = environ.get("wsgidav.auth.user_name")
        if not user:
            return {"user_name": None, "usage": None}
        used, quota = environ["wsgidav.provider"].namespace(environ).usage()
        usage = human_size(used) if quota is None else f"{human_size(used)} of {human_size(quota)}"
        return {
            "user_name": user,
            "access": "read-only" if is_read_only(environ) else "read-write",
            "usage": usage,
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


def _crumbs(href: str) -> list[dict[str, str]]:
    """``[{name, href}]`` from the root to the folder ``href`` (quoted, ends in /)."""
    crumbs = [{"name": "Home", "href": "/"}]
    parts = [p for p in href.split("/") if p]
    for i, part in enumerate(parts):
        crumbs.append({"name": unquote(part),
                       "href": "/" + "/".join(parts[: i + 1]) + "/"})
    return crumbs

