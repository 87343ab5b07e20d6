"""WsgiDAV property manager over the dead properties the catalog keeps per node.

WsgiDAV hands the property manager a ref URL (which carries the user, see
:mod:`provider.paths`), a property name in Clark notation (``{ns}local``) and the
value as serialized XML bytes. The catalog stores ``name -> XML text`` per node, and
moves, copies and deletes the properties together with their node, so the
``copy_properties``/``move_properties``/``remove_properties`` hooks are only used by
WsgiDAV code paths this adapter does not take; they are implemented for
completeness.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsgidav import util
from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError

from davbackup.errors import NotFound
from provider import history
from provider.client_compat import WIN32_MTIME, win32_modified
from provider.errors import dav_errors
from provider.paths import split_ref_url

if TYPE_CHECKING:
    from davbackup.service import DavService

Environ = dict[str, Any]

PROPERTY_CACHE_KEY = "davbackup.properties"
CHILD_PROPERTY_CACHE_KEY = "davbackup.child_properties"


class CatalogPropertyManager:
    """The ``property_manager`` interface of WsgiDAV over ``Namespace`` properties."""

    def __init__(self, repo: DavService) -> None:
        self._repo = repo

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _locate(self, ref_url: str, environ: Environ | None) -> tuple[Any, str]:
        """The namespace and path a ref URL names; refuses another user's URL."""
        user, path = split_ref_url(ref_url)
        if environ is not None:
            current = environ.get("wsgidav.auth.user_name")
            if current and current != user:
                raise DAVError(HTTP_FORBIDDEN, "property of another user's resource")
        return _namespace(self._repo, user, environ), path

    def get_properties(self, norm_url: str, environ: Environ | None = None) -> list[str]:
        return list(self._props(norm_url, environ))

    def get_property(
        self, norm_url: str, name: str, environ: Environ | None = None
    ) -> bytes | None:
        value = self._props(norm_url, environ).get(name)
        return None if value is None else value.encode("utf-8")

    def _props(self, norm_url: str, environ: Environ | None) -> dict[str, str]:
        """All dead properties of a resource, read once per request (WsgiDAV asks for
        the names and then for each value)."""
        cache: dict[str, dict[str, str]] = (
            environ.setdefault(PROPERTY_CACHE_KEY, {}) if environ is not None else {}
        )
        props = cache.get(norm_url)
        if props is None:
            ns, path = self._locate(norm_url, environ)
            props = history.dead_props(ns, path, environ)
            if props is not None:
                cache[norm_url] = props
                return props
            if environ is not None and environ.get("HTTP_DEPTH") == "1" and path != "/":
                props = self._from_parent(ns, path, environ)
            if props is None:
                with dav_errors():
                    try:
                        props = ns.get_props(path)
                    except NotFound:
                        props = {}
            cache[norm_url] = props
        return props

    @staticmethod
    def _from_parent(ns: Any, path: str, environ: Environ) -> dict[str, str] | None:
        """A Depth 1 PROPFIND asks for every child in turn: the properties of all
        children of the parent are read with one query, once per request."""
        parent_path, _, name = path.rpartition("/")
        parents: dict[str, dict[str, dict[str, str]]] = environ.setdefault(CHILD_PROPERTY_CACHE_KEY, {})
        by_child = parents.get(parent_path or "/")
        if by_child is None:
            with dav_errors():
                try:
                    by_child = ns.child_props(parent_path or "/")
                except NotFound:
                    return None
            parents[parent_path or "/"] = by_child
        return by_child.get(name, {})

    def write_property(
        self,
        norm_url: str,
        name: str,
        property_value: bytes | str,
        dry_run: bool = False,
        environ: Environ | None = None,
    ) -> None:
        ns, path = self._locate(norm_url, environ)
        if history.is_history_path(path):
            raise DAVError(HTTP_FORBIDDEN, f"{path}: history is read-only")
        if dry_run:
            return
        _forget(environ)
        value = util.to_str(property_value)
        with dav_errors():
            ns.set_prop(path, name, value)
            if name == WIN32_MTIME:  # Explorer's modification time: shown in listings too
                mtime = win32_modified(value)
                if mtime is not None:
                    ns.set_modified(path, mtime)
        if environ is not None and name == WIN32_MTIME:
            environ.pop("davbackup.resources", None)

    def remove_property(
        self, norm_url: str, name: str, dry_run: bool = False, environ: Environ | None = None
    ) -> None:
        """Removing a property that does not exist is not an error (RFC 4918)."""
        ns, path = self._locate(norm_url, environ)
        if history.is_history_path(path):
            raise DAVError(HTTP_FORBIDDEN, f"{path}: history is read-only")
        if dry_run:
            return
        _forget(environ)
        with dav_errors():
            if name in ns.get_props(path):
                ns.remove_prop(path, name)

    def remove_properties(self, norm_url: str, environ: Environ | None = None) -> None:
        ns, path = self._locate(norm_url, environ)
        _forget(environ)
        with dav_errors():
            try:
                names = list(ns.get_props(path))
            except NotFound:
                return
            for name in names:
                ns.remove_prop(path, name)

    def copy_properties(
        self, src_url: str, dest_url: str, environ: Environ | None = None
    ) -> None:
        src_ns, src_path = self._locate(src_url, environ)
        dest_ns, dest_path = self._locate(dest_url, environ)
        _forget(environ)
        with dav_errors():
            for name, value in src_ns.get_props(src_path).items():
                dest_ns.set_prop(dest_path, name, value)

    def move_properties(
        self,
        src_url: str,
        dest_url: str,
        with_children: bool,
        environ: Environ | None = None,
    ) -> None:
        """Only the node's own properties: the catalog moves children's with them."""
        self.copy_properties(src_url, dest_url, environ)
        self.remove_properties(src_url, environ)


def _forget(environ: Environ | None) -> None:
    if environ is not None:
        environ.pop(PROPERTY_CACHE_KEY, None)


def _namespace(repo: DavService, user: str, environ: Environ | None) -> Any:
    """The user's namespace, reusing the one the provider cached for this request."""
    if environ is not None:
        cached = environ.get("davbackup.namespace")
        if cached is not None and environ.get("davbackup.namespace_user") == user:
            return cached
    return repo.namespace(user)
