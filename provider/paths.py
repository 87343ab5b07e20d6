"""Resource paths and the per-user reference URLs WsgiDAV keys locks and properties by.

Every user sees a tree of their own at ``/``. WsgiDAV identifies a resource for its
lock manager and property manager by ``get_ref_url()``, which by default is just the
quoted path: two users who both have ``/notes.txt`` would then share locks. The
adapter therefore prefixes the user::

    path "/a/b.txt" of user "alice"  ->  ref URL "/alice/a/b.txt"
    collection "/a" of user "alice"  ->  ref URL "/alice/a/"
    root of user "alice"             ->  ref URL "/alice/"

The user segment is quoted with no safe characters, so a name can never smuggle a
``/`` into it. Ref URLs never reach clients: ``get_href()`` (which WsgiDAV uses for
every href it emits) is built from the path alone, the provider inverts ref URLs in
``ref_url_to_path()`` (used for ``lockroot``), and the request server rewrites the
hrefs that lock conflicts put into 423 bodies (:func:`ref_url_to_client_href`).
"""

from __future__ import annotations

from urllib.parse import quote, unquote


def normalize_path(path: str) -> str:
    """The namespace path for a WsgiDAV path: no trailing slash, root is ``/``.

    WsgiDAV has already collapsed ``.``/``..`` segments and doubled slashes; the core
    validates what is left (NUL bytes, over-long names) and raises ``InvalidPath``.
    """
    if not path:
        return "/"
    stripped = path.rstrip("/")
    return stripped if stripped else "/"


def ref_url(user: str, path: str, *, is_collection: bool) -> str:
    """The quoted, user-qualified key of ``path`` (collections end in ``/``)."""
    path = normalize_path(path)
    url = "/" + quote(user, safe="") + (quote(path) if path != "/" else "")
    if is_collection or path == "/":
        url += "/"
    return url


def split_ref_url(url: str) -> tuple[str, str]:
    """Invert :func:`ref_url`: ``(user, path)`` with ``path`` unquoted and normalized."""
    if not url.startswith("/"):
        raise ValueError(f"not a reference URL: {url!r}")
    user_part, _, rest = url[1:].partition("/")
    if not user_part:
        raise ValueError(f"reference URL without a user: {url!r}")
    return unquote(user_part), normalize_path("/" + unquote(rest))


def ref_url_to_client_href(url: str, mount_prefix: str = "") -> str:
    """The href a client sees for ``url``: the user segment removed, still quoted."""
    _user_part, _, rest = url[1:].partition("/")
    href = mount_prefix + "/" + rest
    return href
