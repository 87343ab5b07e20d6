"""The WsgiDAV provider: each authenticated user's ``Namespace`` mounted at ``/``.

The provider holds no per-user state. For each request it takes the user name the
authenticator put into ``environ["wsgidav.auth.user_name"]``, opens that user's
namespace once, and caches every resource it resolves in ``environ`` (WsgiDAV and
the dir browser resolve the same path several times per request). Resources drop
the cache after every change they make.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsgidav.dav_error import HTTP_UNAUTHORIZED, DAVError
from wsgidav.dav_provider import DAVProvider

from provider import history
from provider.auth import USER_KEY
from provider.client_compat import skipped_lock_target
from provider.errors import dav_errors
from provider.paths import normalize_path, split_ref_url
from provider.properties import PROPERTY_CACHE_KEY
from provider.resources import CollectionResource, FileResource, PendingFile

if TYPE_CHECKING:
    from davbackup.fs import Entry, Namespace
    from davbackup.service import DavService

Environ = dict[str, Any]

_CACHE_KEY = "davbackup.resources"
_NS_KEY = "davbackup.namespace"
_NS_USER_KEY = "davbackup.namespace_user"


class DavBackupProvider(DAVProvider):
    """Maps ``/path`` of the authenticated user onto ``repo.namespace(user)``."""

    def __init__(self, repo: DavService) -> None:
        super().__init__()
        self.repo = repo

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # --- per-request state ---------------------------------------------------

    def user_name(self, environ: Environ) -> str:
        user = environ.get("wsgidav.auth.user_name")
        if not user:
            # The authenticator runs before the provider; never serve anonymously.
            raise DAVError(HTTP_UNAUTHORIZED, "authentication required")
        return str(user)

    def namespace(self, environ: Environ) -> Namespace:
        """The authenticated user's namespace, opened once per request."""
        user = self.user_name(environ)
        ns = environ.get(_NS_KEY)
        if ns is None or environ.get(_NS_USER_KEY) != user:
            checked = environ.get(USER_KEY)  # the row the password was checked against
            root_id = checked.root_id if checked is not None and checked.name == user else None
            with dav_errors():
                ns = self.repo.namespace(user, root_id)
            environ[_NS_KEY] = ns
            environ[_NS_USER_KEY] = user
        return ns

    def forget(self, environ: Environ) -> None:
        """Drop the request's resource and property caches after a change."""
        environ.pop(_CACHE_KEY, None)
        environ.pop(PROPERTY_CACHE_KEY, None)

    # --- DAVProvider interface --------------------------------------------------

    def get_resource_inst(self, path: str, environ: Environ) -> Any:
        """The resource at ``path`` of the current user, or None."""
        key = normalize_path(path)
        cache: dict[str, Any] = environ.setdefault(_CACHE_KEY, {})
        if key in cache:
            return cache[key]
        if history.is_history_path(key):
            history.refuse_writes(key, environ)
            resource = history.resolve(self, key, environ)
            cache[key] = resource
            return resource
        ns = self.namespace(environ)
        with dav_errors():
            entry = ns.lookup(key)
        resource = None if entry is None else self._make(key, entry, environ)
        if resource is None and key != "/" and skipped_lock_target(key, environ):
            parent = self.get_resource_inst(key.rsplit("/", 1)[0] or "/", environ)
            if parent is not None and parent.is_collection:  # locked, never stored
                resource = PendingFile(key, environ)
        cache[key] = resource
        return resource

    def resource_for(self, entry: Entry, environ: Environ) -> Any:
        """A resource for an entry from a listing; remembered for this request."""
        key = normalize_path(entry.path)
        cache: dict[str, Any] = environ.setdefault(_CACHE_KEY, {})
        resource = self._make(key, entry, environ)
        cache[key] = resource
        return resource

    def ref_url_to_path(self, ref_url: str) -> str:
        """Invert ``get_ref_url()`` (used for ``lockroot``): drop the user segment."""
        return split_ref_url(ref_url)[1]

    # --- helpers ----------------------------------------------------------------

    @staticmethod
    def _make(path: str, entry: Entry, environ: Environ) -> Any:
        if entry.is_dir:
            return CollectionResource(path, environ, entry)
        return FileResource(path, environ, entry)
