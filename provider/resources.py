"""WsgiDAV resources over catalog entries: files, collections, and a PUT placeholder.

A resource wraps one :class:`davbackup.fs.Entry` (an immutable snapshot taken
when the request looked the path up) and the user's ``Namespace``. Reads come from
the entry; every write goes through the namespace and then drops the request's
resource cache, because WsgiDAV resolves paths again after it has changed them.

Copy, move and delete are done natively (``handle_copy``/``handle_move``/
``handle_delete``): the catalog does them as metadata operations, without touching
file data, and moves the dead properties along. This module adds what WsgiDAV leaves
to the provider: the lock check on the deleted resource itself, dropping locks of
removed resources, and telling the request server whether a COPY/MOVE destination
was created (201) or replaced (204) through ``environ[CREATED_KEY]``.

A PUT of a new file must not leave an empty file behind if its body never arrives,
so ``create_empty_resource`` returns a :class:`PendingFile` during a PUT; the file
exists only once ``end_write`` commits. A LOCK of an unmapped URL does create an
empty file (RFC 4918 §9.10.4).
"""

from __future__ import annotations

import logging
import shutil
from typing import TYPE_CHECKING, Any

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection
from wsgidav.xml_tools import etree

from davbackup.digests import Digests, verify_digests
from provider.digests import parse_digests
from provider.errors import dav_errors
from provider.internals import read_into
from provider.locks import check_write_locks
from provider.paths import normalize_path, ref_url
from provider.request_checks import mtime_in_range

if TYPE_CHECKING:
    from davbackup.fs import Entry, Namespace
    from provider.dav_provider import DavBackupProvider

Environ = dict[str, Any]

_log = logging.getLogger(__name__)

#: environ key set by handle_copy/handle_move: True if the destination was created.
CREATED_KEY = "davbackup.destination_created"


class _Node:
    """What files and collections share: dates, ref URL and catalog operations."""

    provider: DavBackupProvider
    environ: Environ
    path: str
    name: str
    is_collection: bool
    entry: Entry | None

    # --- identity and live properties --------------------------------------

    @property
    def ns(self) -> Namespace:
        return self.provider.namespace(self.environ)

    @property
    def user(self) -> str:
        return self.provider.user_name(self.environ)

    def get_ref_url(self) -> str:
        # WsgiDAV asks about ten times per resource in a PROPFIND: compute it once.
        url = self.__dict__.get("_ref_url")
        if url is None:
            url = self.__dict__["_ref_url"] = ref_url(
                self.user, self.path, is_collection=self.is_collection
            )
        return url

    def get_creation_date(self) -> float | None:
        return self.entry.created if self.entry else None

    def get_last_modified(self) -> float | None:
        return self.entry.modified if self.entry else None

    def get_display_name(self) -> str:
        return self.name

    def set_last_modified(self, dest_path: str, time_stamp: Any, *, dry_run: bool) -> bool:
        """Set the modification time (X-OC-Mtime on PUT/MKCOL, or a PROPPATCH)."""
        secs: float | None
        if isinstance(time_stamp, (int, float)):
            try:
                secs = float(time_stamp)
            except OverflowError:
                secs = None
        else:
            secs = util.parse_time_string(str(time_stamp))
        if secs is None or not mtime_in_range(secs):
            raise DAVError(HTTP_BAD_REQUEST, f"invalid time stamp {time_stamp!r}")
        if not dry_run:
            with dav_errors():
                self.ns.set_modified(normalize_path(dest_path), secs)
            self.provider.forget(self.environ)
        return True

    # --- native delete / copy / move ----------------------------------------

    def handle_delete(self) -> bool:
        """Delete the node (recursively) in the catalog; drop locks at and below it.

        WsgiDAV only checked the parent's locks: a lock on this resource or on a
        member must be checked here.
        """
        self._check_locks(self.get_ref_url(), "infinity")
        self.delete()
        return True

    def delete(self) -> None:
        with dav_errors():
            self.ns.delete(self.path)
        self._drop_locks(self.get_ref_url(), include_root=True)
        self.provider.forget(self.environ)

    def handle_copy(self, dest_path: str, *, depth_infinity: bool) -> bool:
        """Copy in the catalog (no data is copied); dead properties come along."""
        dest = self._destination(dest_path)
        with dav_errors():
            created = self.ns.copy(
                self.path, dest, overwrite=self._overwrite(), recursive=depth_infinity
            )
        self._after_transfer(dest, created)
        return True

    def handle_move(self, dest_path: str) -> bool:
        """Move in the catalog; locks stay behind (RFC 4918 §9.9.4), so drop them."""
        dest = self._destination(dest_path)
        src_ref = self.get_ref_url()
        with dav_errors():
            created = self.ns.move(self.path, dest, overwrite=self._overwrite())
        self._drop_locks(src_ref, include_root=True)
        self._after_transfer(dest, created)
        return True

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> list:
        self.handle_move(dest_path)
        return []

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        # Unreachable: handle_copy/handle_move always handle the request.
        raise DAVError(HTTP_FORBIDDEN, "file-by-file copy is not supported")

    # --- helpers ----------------------------------------------------------------

    def _destination(self, dest_path: str) -> str:
        """The namespace path of a COPY/MOVE destination.

        WsgiDAV refuses a destination below the source, but not one above it:
        overwriting an ancestor would delete the source with it, so refuse that too.
        """
        dest = normalize_path(dest_path)
        if dest == "/" or self.path.startswith(dest.rstrip("/") + "/"):
            raise DAVError(HTTP_FORBIDDEN, f"{dest!r} contains the source {self.path!r}")
        return dest

    def _overwrite(self) -> bool:
        return self.environ.get("HTTP_OVERWRITE", "T").upper() != "F"

    def _after_transfer(self, dest: str, created: bool) -> None:
        """Record 201/204 and drop locks that belonged to a replaced subtree."""
        self.environ[CREATED_KEY] = bool(created)
        if not created:
            # The destination's own lock keeps covering it (RFC 4918 §7.5); locks on
            # members of a replaced collection name resources that are gone.
            is_dir = self.is_collection
            self._drop_locks(ref_url(self.user, dest, is_collection=is_dir), include_root=False)
        self.provider.forget(self.environ)

    def _check_locks(self, url: str, depth: str) -> None:
        lock_manager = self.provider.lock_manager
        if lock_manager is None:
            return
        if "wsgidav.conditions.if" not in self.environ:
            util.parse_if_header_dict(self.environ)
        check_write_locks(
            lock_manager,
            url=url,
            depth=depth,
            token_list=self.environ["wsgidav.ifLockTokenList"],
            principal=self.environ["wsgidav.user_name"],
        )

    def _drop_locks(self, url: str, *, include_root: bool) -> None:
        lock_manager = self.provider.lock_manager
        if lock_manager is None:
            return
        tokens = lock_manager.storage.get_lock_list(
            url, include_root=include_root, include_children=True, token_only=True
        )
        for token in tokens:
            lock_manager.release(token)


OC_CHECKSUMS = "{http://owncloud.org/ns}checksums"
QUOTA_USED = "{DAV:}quota-used-bytes"
QUOTA_AVAILABLE = "{DAV:}quota-available-bytes"
OC_CHECKSUM = "{http://owncloud.org/ns}checksum"


class FileResource(_Node, DAVNonCollection):
    """A committed file: content, size, strong ETag, ranges."""

    def __init__(self, path: str, environ: Environ, entry: Entry | None) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.entry = entry
        self._writer: BodyWriter | None = None

    def get_content_length(self) -> int:
        return self.entry.size if self.entry else 0

    def get_content_type(self) -> str:
        ctype = self.__dict__.get("_content_type")
        if ctype is None:
            ctype = self.__dict__["_content_type"] = super().get_content_type()
        return ctype

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names = super().get_property_names(is_allprop=is_allprop)
        if self.entry is not None and self.entry.checksums and OC_CHECKSUMS not in names:
            names.append(OC_CHECKSUMS)
        return names

    def get_property_value(self, name: str) -> Any:
        """``oc:checksums`` (what rclone's owncloud vendor checks): the SHA-1 the
        uploading client sent and the server verified, and the MD5 computed in the
        same pass, kept with the version."""
        if name == OC_CHECKSUMS and self.entry is not None and self.entry.checksums:
            element = etree.Element(name)
            etree.SubElement(element, OC_CHECKSUM).text = self.entry.checksums
            return element
        return super().get_property_value(name)

    def get_etag(self) -> str | None:
        return self.entry.etag if self.entry else None

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> Any:
        """A seekable reader; the core verifies what it returns. WsgiDAV accepts
        short reads, so each read ends at a chunk boundary (no joins or copies)."""
        with dav_errors():
            return ChunkAlignedReader(self.ns.open_read(self.path))

    def begin_write(self, *, content_type: str | None = None) -> BodyWriter:
        """Start a new version: nothing is visible until ``end_write`` commits it."""
        digests = parse_digests(self.environ)  # a malformed header is a 400 before the body
        self._check_room()
        with dav_errors():
            self._writer = BodyWriter(self.ns.open_write(self.path), digests, self.path)
        return self._writer

    def _check_room(self) -> None:
        """Refuse a body that cannot fit the user's quota before reading it (507)."""
        expected = expected_body_size(self.environ)
        if not check_room(self.ns, expected, self.get_content_length()):
            with dav_errors():
                room = self.ns.room()
            raise DAVError(
                HTTP_INSUFFICIENT_STORAGE,
                f"{self.path}: {expected} bytes do not fit the {room} bytes left in the quota",
            )

    def end_write(self, *, with_errors: bool) -> None:
        """Commit the new version, or abort it if the body failed or fell short."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if with_errors:
            writer.abort()
            return
        expected = expected_body_size(self.environ)
        if expected is not None and writer.received != expected:
            writer.abort()
            raise DAVError(
                HTTP_BAD_REQUEST,
                f"body of {self.path!r} had {writer.received} of {expected} announced bytes;"
                " nothing was stored",
            )
        try:
            with dav_errors():
                self.entry = writer.commit(expected)
        finally:
            self.provider.forget(self.environ)


class PendingFile(FileResource):
    """The target of a PUT to a new path: it exists only after ``end_write``."""

    def __init__(self, path: str, environ: Environ) -> None:
        super().__init__(path, environ, None)


class CollectionResource(_Node, DAVCollection):
    """A folder: members come from one catalog listing."""

    def __init__(self, path: str, environ: Environ, entry: Entry | None) -> None:
        DAVCollection.__init__(self, path, environ)
        self.entry = entry

    def get_property_value(self, name: str) -> Any:
        """RFC 4331 quota properties (live, computed; not part of allprop)."""
        if name in (QUOTA_USED, QUOTA_AVAILABLE):
            with dav_errors():
                used, quota = self.ns.usage()
            if name == QUOTA_USED:
                return str(used)
            if quota is not None:
                return str(max(0, quota - used))
            return str(shutil.disk_usage(self.provider.repo.root).free)
        return super().get_property_value(name)

    def get_member_list(self) -> list:
        """All members, from one ``Namespace.list`` call (not one lookup each)."""
        with dav_errors():
            entries = self.ns.list(self.path)
        return [self.provider.resource_for(entry, self.environ) for entry in entries]

    def get_member_names(self) -> list[str]:
        return [member.name for member in self.get_member_list()]

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    def support_recursive_delete(self) -> bool:
        return True

    def create_empty_resource(self, name: str) -> FileResource:
        """For PUT a placeholder (committed by the PUT); for LOCK a real empty file."""
        path = util.join_uri(self.path, name)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            return PendingFile(path, self.environ)
        with dav_errors():
            entry = self.ns.create_empty(path)
        self.provider.forget(self.environ)
        return self.provider.resource_for(entry, self.environ)

    def create_collection(self, name: str) -> None:
        with dav_errors():
            self.ns.mkdir(util.join_uri(self.path, name))
        self.provider.forget(self.environ)


class BodyWriter:
    """What WsgiDAV's PUT writes the body into: counts bytes, commits only on demand.

    WsgiDAV calls ``close()`` when the body has been read; that is not a commit.
    """

    def __init__(self, writer: Any, digests: Digests | None = None, path: str = "") -> None:
        self._writer = writer
        self._digests = digests
        self._path = path
        self.received = 0
        self._done = False

    def write(self, data: bytes | bytearray, *, owned: bool = False) -> None:
        """``owned``: ``data`` is handed over, never to be changed (see ``FileWriter.write``)."""
        with dav_errors():
            self._writer.write(data, owned=owned)
        self.received += len(data)

    def fill(self, stream: Any) -> int:
        """Read the next bytes of the body from ``stream`` straight into the store's
        chunker (``FileWriter.fill``); 0 at the body's end."""
        with dav_errors():
            got = int(self._writer.writer.fill(lambda view: read_into(stream, view)))
        self.received += got
        return got

    def close(self) -> None:
        pass

    def commit(self, expected_size: int | None) -> Entry:
        """Make the new version visible; on failure the core leaves no trace."""
        self._done = True
        digests, pending, path = self._digests, self._writer, self._path
        if not digests:
            return pending.commit(expected_size=expected_size)
        verified: list[str | None] = []

        def verify() -> None:
            # Repr-Digest / OC-Checksum on a whole PUT: read back and compare before
            # the new version becomes current; a mismatch keeps the old one.
            verified.append(verify_digests(digests, pending.writer, path))

        return pending.commit(expected_size=expected_size, verify=verify, checksums=lambda: verified[0])

    def abort(self) -> None:
        """Discard what arrived. Best effort: the request already has its error."""
        if self._done:
            return
        self._done = True
        try:
            self._writer.abort()
        except Exception:
            _log.exception("aborting an upload failed")


def check_room(ns: Namespace, expected: int | None, replaced: int) -> bool:
    """Whether a body of ``expected`` bytes (None: not announced) replacing a file of
    ``replaced`` bytes fits the user's quota."""
    if expected is None:
        return True
    with dav_errors():
        room = ns.room()
    return room is None or expected - replaced <= room


def expected_body_size(environ: Environ) -> int | None:
    """The body size the client announced: Content-Length, else X-Expected-Entity-Length.

    macOS Finder sends chunked bodies with ``X-Expected-Entity-Length``; a body that
    ends early must be rejected rather than stored short.
    """
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    candidates = []
    if not chunked:
        candidates.append(environ.get("CONTENT_LENGTH"))
    candidates.append(environ.get("HTTP_X_EXPECTED_ENTITY_LENGTH"))
    for value in candidates:
        if value is None or str(value).strip() == "":
            continue
        try:
            size = int(str(value).strip())
        except ValueError:
            raise DAVError(HTTP_BAD_REQUEST, f"invalid body length {value!r}") from None
        if size < 0:
            raise DAVError(HTTP_BAD_REQUEST, f"invalid body length {value!r}")
        return size
    return None


class ChunkAlignedReader:
    """What WsgiDAV reads a GET body from: ``read`` is the core reader's ``read1``."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def read(self, n: int = -1) -> bytes:
        with dav_errors():
            return self._reader.read1(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._reader.seek(offset, whence)

    def expect(self, end: int) -> None:
        """Nothing at or past byte ``end`` is read (what the reader may fetch ahead)."""
        self._reader.expect(end)

    def tell(self) -> int:
        return self._reader.tell()

    def close(self) -> None:
        self._reader.close()
