"""Read-only WebDAV resources for history: ``/.history/`` and ``/.versions/`` (DESIGN.md §15).

* ``/.history/`` lists the user's retained points in time; ``/.history/<T>/<path>`` is
  the tree as it was at the newest retained moment at or before ``T``, for any
  well-formed ``T``.
* ``/.versions/<folder>/`` mirrors the live folders; ``/.versions/<file>/`` lists every
  retained version of that file (also of one deleted since), named by moment plus the
  file's extension.

Everything here is read-only: writes answer 403 (:func:`refuse_writes` runs before any
resource is built). A COPY out of history restores, in the catalog only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsgidav import util
from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection

from davbackup.errors import DavBackupError, NotFound
from davbackup.fs import RESERVED_ROOT_NAMES
from davbackup.history import format_moment, parse_moment, split_version_name
from provider.errors import dav_errors
from provider.paths import normalize_path, ref_url
from provider.resources import CREATED_KEY, ChunkAlignedReader

if TYPE_CHECKING:
    from davbackup.fs import Entry, Namespace
    from davbackup.history import FileVersion, History, PointInTime
    from provider.dav_provider import DavBackupProvider

Environ = dict[str, Any]

HISTORY = "/.history"
VERSIONS = "/.versions"
WRITE_METHODS = frozenset({"PUT", "PATCH", "DELETE", "MKCOL", "MOVE", "PROPPATCH", "LOCK", "POST"})


def is_history_path(path: str) -> bool:
    return path.strip("/").split("/", 1)[0] in RESERVED_ROOT_NAMES


def refuse_writes(path: str, environ: Environ) -> None:
    """History is read-only: any write request naming it is refused before it starts."""
    if environ.get("REQUEST_METHOD", "").upper() in WRITE_METHODS and is_history_path(path):
        raise DAVError(HTTP_FORBIDDEN, f"{path}: history is read-only")


def resolve(provider: DavBackupProvider, path: str, environ: Environ) -> Any:
    """The history resource at ``path`` (normalized, under /.history or /.versions), or None."""
    ns = provider.namespace(environ)
    parts = [p for p in path.split("/") if p]
    try:
        with dav_errors():
            if parts[0] == ".history":
                return _resolve_history(ns, parts[1:], path, environ)
            return _resolve_versions(ns, parts[1:], path, environ)
    except DAVError as exc:
        if exc.value in (400, 404, 409):
            return None  # a malformed moment or a missing path: not found
        raise


def _resolve_history(ns: Namespace, rest: list[str], path: str, environ: Environ) -> Any:
    if not rest:
        return HistoryRoot(path, environ)
    point = ns.history().at(parse_moment(rest[0]))
    inner = "/" + "/".join(rest[1:])
    entry = point.lookup(inner)
    if entry is None:
        return None
    return _point_resource(point, inner, entry, environ)


def _point_resource(point: PointInTime, inner: str, entry: Entry, environ: Environ) -> Any:
    path = f"{HISTORY}/{point.name}{inner.rstrip('/')}" if inner != "/" else f"{HISTORY}/{point.name}"
    if entry.is_dir:
        return PointCollection(path, environ, point, inner, entry)
    return PointFile(path, environ, point, inner, entry)


def _resolve_versions(ns: Namespace, rest: list[str], path: str, environ: Environ) -> Any:
    target = "/" + "/".join(rest)
    history = ns.history()
    if rest:
        try:
            second, _ext = split_version_name(rest[-1])
        except DavBackupError:
            second = None
        if second is not None:
            file_path = "/" + "/".join(rest[:-1])
            try:
                version = history.version(file_path, rest[-1])
            except DavBackupError:
                version = None
            if version is not None:
                return VersionFile(path, environ, history, file_path, version)
    live = ns.lookup(target)
    if live is not None and live.is_dir:
        return VersionsFolder(path, environ, target, live)
    try:
        versions = history.versions(target)
    except NotFound:
        return None
    return FileVersions(path, environ, target, versions)


class _ReadOnly:
    """What every history resource shares: no writes, no locks; COPY out restores."""

    provider: DavBackupProvider
    environ: Environ
    path: str
    name: str
    is_collection: bool
    entry: Entry | None = None

    @property
    def ns(self) -> Namespace:
        return self.provider.namespace(self.environ)

    def get_ref_url(self) -> str:
        user = self.provider.user_name(self.environ)
        return ref_url(user, self.path, is_collection=self.is_collection)

    def get_creation_date(self) -> float | None:
        return self.entry.created if self.entry else None

    def get_last_modified(self) -> float | None:
        return self.entry.modified if self.entry else None

    def get_display_name(self) -> str:
        return self.name

    def prevent_locking(self) -> bool:
        return True

    def set_property_value(self, name: str, value: Any, dry_run: bool = False) -> None:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def set_last_modified(self, dest_path: str, time_stamp: Any, *, dry_run: bool) -> bool:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def handle_delete(self) -> bool:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def delete(self) -> None:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def handle_move(self, dest_path: str) -> bool:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> list:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def begin_write(self, *, content_type: str | None = None) -> Any:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def create_empty_resource(self, name: str) -> Any:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def create_collection(self, name: str) -> None:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: history is read-only")

    def handle_copy(self, dest_path: str, *, depth_infinity: bool) -> bool:
        """COPY out of history restores into the live tree (catalog only)."""
        dest = normalize_path(dest_path)
        if is_history_path(dest):
            raise DAVError(HTTP_FORBIDDEN, f"{dest}: history is read-only")
        overwrite = self.environ.get("HTTP_OVERWRITE", "T").upper() != "F"
        with dav_errors():
            created = self._restore(dest, overwrite)
        self.environ[CREATED_KEY] = bool(created)
        self.provider.forget(self.environ)
        return True

    def _restore(self, dest: str, overwrite: bool) -> bool:
        raise DAVError(HTTP_FORBIDDEN, f"{self.path}: cannot be restored; copy a point in time or a version")


class HistoryRoot(_ReadOnly, DAVCollection):
    """``/.history/``: one member per retained point in time."""

    def __init__(self, path: str, environ: Environ) -> None:
        DAVCollection.__init__(self, path, environ)

    def get_member_names(self) -> list[str]:
        with dav_errors():
            return [format_moment(s) for s in self.ns.history().moments()]

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)


class PointCollection(_ReadOnly, DAVCollection):
    """A folder as it was at a point in time."""

    def __init__(self, path: str, environ: Environ, point: PointInTime, inner: str, entry: Entry) -> None:
        DAVCollection.__init__(self, path, environ)
        self.point, self.inner, self.entry = point, inner, entry

    def get_member_list(self) -> list:
        with dav_errors():
            entries = self.point.list(self.inner)
        return [_point_resource(self.point, e.path, e, self.environ) for e in entries]

    def get_member_names(self) -> list[str]:
        return [m.name for m in self.get_member_list()]

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    def _restore(self, dest: str, overwrite: bool) -> bool:
        return self.ns.history().restore(self.point.second, self.inner, dest, overwrite)


class PointFile(_ReadOnly, DAVNonCollection):
    """A file as it was at a point in time: its ETag, size and modification time then."""

    def __init__(self, path: str, environ: Environ, point: PointInTime, inner: str, entry: Entry) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.point, self.inner, self.entry = point, inner, entry

    def get_content_length(self) -> int:
        return self.entry.size if self.entry else 0

    def get_etag(self) -> str | None:
        return self.entry.etag if self.entry else None

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> Any:
        with dav_errors():
            return ChunkAlignedReader(self.point.open_read(self.inner))

    def _restore(self, dest: str, overwrite: bool) -> bool:
        return self.ns.history().restore(self.point.second, self.inner, dest, overwrite)


class VersionsFolder(_ReadOnly, DAVCollection):
    """``/.versions/<folder>/``: the live folder's members, each opening its versions."""

    def __init__(self, path: str, environ: Environ, target: str, entry: Entry) -> None:
        DAVCollection.__init__(self, path, environ)
        self.target, self.entry = target, entry

    def get_member_names(self) -> list[str]:
        with dav_errors():
            return [e.name for e in self.ns.list(self.target)]

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)


class FileVersions(_ReadOnly, DAVCollection):
    """``/.versions/<file>/``: every retained version of one file, oldest first."""

    def __init__(self, path: str, environ: Environ, target: str, versions: list[FileVersion]) -> None:
        DAVCollection.__init__(self, path, environ)
        self.target, self.versions = target, versions
        self.entry = versions[-1].entry if versions else None

    def get_member_list(self) -> list:
        history = self.ns.history()
        return [
            VersionFile(util.join_uri(self.path, v.name), self.environ, history, self.target, v)
            for v in self.versions
        ]

    def get_member_names(self) -> list[str]:
        return [v.name for v in self.versions]

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)


class VersionFile(_ReadOnly, DAVNonCollection):
    """One version of a file; COPY restores it as the file's newest version."""

    def __init__(self, path: str, environ: Environ, history: History, target: str, version: FileVersion) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.history, self.target, self.version = history, target, version
        self.entry = version.entry

    def get_content_length(self) -> int:
        return self.version.entry.size

    def get_etag(self) -> str | None:
        return self.version.entry.etag

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> Any:
        with dav_errors():
            return ChunkAlignedReader(self.history.read_version(self.version, self.target))

    def _restore(self, dest: str, overwrite: bool) -> bool:
        return self.history.restore_version(self.target, self.version.name, dest, overwrite)


#: per request: resolved points in time, props of listed folders' members, versions of files
DEAD_PROPS_CACHE_KEY = "davbackup.history_props"


def dead_props(ns: Namespace, path: str, environ: Environ | None = None) -> dict[str, str] | None:
    """Dead properties of a history resource as they were then (None: not history).

    A PROPFIND of a history folder asks this for every member: with ``environ``, the
    point in time is resolved once per request, in a Depth 1 PROPFIND the members'
    properties are read for the whole folder at once, and a file's versions are
    listed once."""
    if not is_history_path(path):
        return None
    parts = [p for p in path.split("/") if p]
    cache: dict[tuple, Any] = environ.setdefault(DEAD_PROPS_CACHE_KEY, {}) if environ is not None else {}
    try:
        if parts[0] == ".history" and len(parts) > 1:
            point = cache.get(("at", parts[1]))
            if point is None:
                point = cache[("at", parts[1])] = ns.history().at(parse_moment(parts[1]))
            listing = environ is not None and environ.get("HTTP_DEPTH") == "1"
            if len(parts) == 2 or not listing:
                return point.get_props("/" + "/".join(parts[2:]))
            folder = "/" + "/".join(parts[2:-1])
            members = cache.get(("members", parts[1], folder))
            if members is None:
                members = cache[("members", parts[1], folder)] = point.child_props(folder)
            return members.get(parts[-1], {})
        if parts[0] == ".versions" and len(parts) > 1:
            file_path = "/" + "/".join(parts[1:-1])
            versions = cache.get(("versions", file_path))
            if versions is None:
                history = ns.history()
                try:
                    listed = history.versions(file_path)
                except DavBackupError:
                    listed = []
                versions = cache[("versions", file_path)] = (history, {v.name: v for v in listed})
            history, by_name = versions
            version = by_name.get(parts[-1])
            return history.props_of(version, file_path) if version is not None else {}
    except DavBackupError:
        return {}
    return {}
