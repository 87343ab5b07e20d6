"""WsgiDAV's HTML directory listing, telling read-only users that they are.

WsgiDAV decides "read-only" per provider; davbackup decides it per user (role
``ro``), so the listing of such a user must not claim read-write access or offer
editing links.
"""

from __future__ import annotations

from typing import Any

from wsgidav.dir_browser import WsgiDavDirBrowser

from provider.auth import is_read_only


class DavBackupDirBrowser(WsgiDavDirBrowser):
    """The dir browser with per-user read-only state."""

    def _get_context(self, environ: dict[str, Any], dav_res: Any) -> dict[str, Any]:  # internals.OVERRIDES
        context = super()._get_context(environ, dav_res)
        if is_read_only(environ):
            context["is_readonly"] = True
            context["access"] = "read-only"
            for row in context["rows"]:  # no "edit with Office" links
                row["ofe_prefix"] = None
                row["add_link_html"] = ""
        return context
