"""The catalog as a file system: one user's namespace (DESIGN.md §10).

This is the one definition of files and folders over the store; the WebDAV provider
and the CLI are thin adapters over it. Paths are Unicode strings with ``/``
separators; ``/`` is the user's root. Every change is one catalog transaction (a large
COPY or DELETE: bounded batches no client can tell from one, davbackup/tree_bulk.py).
"""

from __future__ import annotations

import builtins
import sqlite3
from typing import TYPE_CHECKING, Callable, Iterator

from davbackup import clock, linking, listing, properties, tree_bulk
from davbackup.entry import BodyReader, Entry
from davbackup.entry import entry_of as _entry
from davbackup.errors import (
    AlreadyExists,
    Conflict,
    IncompleteBody,
    InvalidPath,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    RangeError,
    StorageFull,
)
from davbackup.file_store import FileStore
from davbackup.reader import VersionReader
from davbackup.tree import MAX_DEPTH, Node, join_path, record_moment, split_path
from davbackup.users import charge, charge_and_usage, usage_of_root
from davbackup.versions import chunk_rows, verify_version
from davbackup.writer import FileWriter

if TYPE_CHECKING:
    from davbackup.history import History


#: a path as its components (``/a/b`` is ``["a", "b"]``); inside :class:`Namespace`, ``list``
#: is its method
Parts = list[str]

#: chunk lists up to this long (files up to about 16 GiB at 512 KiB per chunk) are kept,
#: once verified, in ``FileStore.chunk_lists`` and read from there; longer ones are verified
#: as a stream at every open and read in batches
KEEP_CHUNK_LIST = 1 << 15

#: Names at a user's root that belong to history (DESIGN.md §15): never live files.
RESERVED_ROOT_NAMES = frozenset({".history", ".versions"})


class PendingFile:
    """A file being written to a path; becomes visible at :meth:`commit`."""

    def __init__(self, ns: "Namespace", parts: list[str], writer: FileWriter) -> None:
        self._ns = ns
        self._parts = parts
        self.writer = writer

    @property
    def received(self) -> int:
        return self.writer.received

    def write(self, data: bytes | bytearray | memoryview, *, owned: bool = False) -> None:
        self.writer.write(data, owned=owned)

    def commit(self, expected_size: int | None = None, verify: Callable[[], None] | None = None,
               checksums: Callable[[], str | None] | None = None) -> Entry:
        """``verify`` runs before the commit; ``checksums`` (if given, after it) returns
        the checksum text to keep with the version."""
        tree = self._ns._tree
        text: list[str | None] = [None]

        def sealed() -> bytes | None:
            text[0] = checksums() if checksums is not None else None
            return tree.seal_checksums(text[0])

        return self.writer.commit(self._ns._linker(self._parts, lambda: text[0]), expected_size=expected_size,
                                  verify=verify, checksums=sealed)

    def abort(self) -> None:
        self.writer.abort()


class Namespace:
    def __init__(self, store: FileStore, user: str, root_id: int) -> None:
        self.store = store
        self.user = user
        self.root_id = root_id
        self._tree = store.tree
        self._catalog = store.catalog

    # -- bookkeeping shared by every change ----------------------------------------

    def _changed(self, conn: sqlite3.Connection, now: float, delta: int = 0, pending: int = 0) -> None:
        """Record the point in time and charge ``delta`` live bytes to the user's quota.

        Inside the change's transaction: a write that would go over the quota raises
        :class:`StorageFull` and the job's savepoint undoes everything it did.
        ``pending``: bytes this change put into the trash (still in ``used`` until
        the trash is emptied, right after), not held against the quota.
        """
        record_moment(conn, self.root_id, now)
        if delta < 0:
            charge(conn, self.root_id, delta)
        elif delta > 0:
            used, quota = charge_and_usage(conn, self.root_id, delta) or (0, None)
            if quota is not None and used - pending > quota:
                raise StorageFull(
                    f"quota of user {self.user!r} exceeded: {used} of {quota} bytes; nothing was changed"
                )

    def room(self) -> int | None:
        """Bytes the user may still add (None: no quota)."""
        row = usage_of_root(self._catalog.reader(), self.root_id)
        if row is None or row[1] is None:
            return None
        return max(0, row[1] - row[0])

    def usage(self) -> tuple[int, int | None]:
        """(live bytes, quota or None)."""
        return usage_of_root(self._catalog.reader(), self.root_id) or (0, None)

    def check_writable(self, path: str) -> None:
        """Refuse (403) a path inside the read-only history folders."""
        self._writable(split_path(path), path)

    @staticmethod
    def _writable(parts: list[str], path: str) -> None:
        if parts and parts[0] in RESERVED_ROOT_NAMES:
            raise PermissionDenied(f"{path}: {parts[0]} is reserved for history and is read-only")

    def history(self) -> "History":
        """Points in time, file versions and restore for this user (DESIGN.md §15)."""
        from davbackup.history import History

        return History(self)

    # -- reading -----------------------------------------------------------------

    def lookup(self, path: str) -> Entry | None:
        """What is at ``path``; remembered until the catalog changes (davbackup/lookup_cache.py)."""
        return self.store.lookups.lookup(self._catalog, (self.root_id, path), lambda conn: self._resolve(conn, path))

    def _resolve(self, conn: sqlite3.Connection, path: str) -> Entry | None:
        parts = split_path(path)
        node = self._tree.resolve(conn, self.root_id, parts)
        return _entry(parts, node) if node else None

    def lookup_for_write(self, path: str) -> tuple[Entry | None, bool]:
        """What is at ``path`` (as :meth:`lookup`) and whether its parent is a folder,
        from one walk of the path: a whole-file PUT's look before :meth:`open_write`
        with ``looked=True``."""
        parts = split_path(path)
        if not parts:
            return self.lookup(path), False
        conn = self._catalog.reader()
        parent_id = self._tree.folder_id(conn, self.root_id, parts[:-1])
        if parent_id is None:
            return None, False
        node = self._tree.child(conn, parent_id, parts[-1])
        return (_entry(parts, node) if node else None), True

    def stat(self, path: str) -> Entry:
        entry = self.lookup(path)
        if entry is None:
            raise NotFound(f"{path}: no such file or folder")
        return entry

    def list(self, path: str) -> list[Entry]:
        parts = split_path(path)
        conn = self._catalog.reader()
        node = self._tree.resolve(conn, self.root_id, parts)
        if node is None:
            raise NotFound(f"{path}: no such folder")
        if not node.is_dir:
            raise Conflict(f"{path}: not a folder")
        return [_entry(parts + [c.name], c) for c in self._tree.children(conn, node.id)]

    def node_listing(self, entry: Entry, with_children: bool) -> tuple[
            dict[str, str], builtins.list[listing.Child], dict[int, dict[str, str]]]:
        """An entry's dead properties; a folder's children as tuples and theirs (davbackup/listing.py)."""
        return listing.node_listing(self._catalog.reader(), self._tree, entry.node_id, entry.path, with_children)

    def walk(self, path: str) -> Iterator[Entry]:
        """Every entry below ``path`` (depth first, parents before children)."""
        for entry in self.list(path):
            yield entry
            if entry.is_dir:
                yield from self.walk(entry.path)

    def _file_node(self, conn: sqlite3.Connection, parts: Parts, path: str) -> tuple[Node, int]:
        node = self._tree.resolve(conn, self.root_id, parts)
        if node is None:
            raise NotFound(f"{path}: no such file")
        if node.is_dir or node.version_id is None:
            raise Conflict(f"{path}: is a folder")
        return node, node.version_id

    def open_read(self, path: str) -> VersionReader:
        parts = split_path(path)
        node, version_id = self._file_node(self._catalog.reader(), parts, path)
        return self.version_reader(version_id, node.size, node.etag, join_path(parts))

    def version_reader(self, version_id: int, size: int, etag: str, path: str) -> VersionReader:
        """A reader of one version, after checking that the catalog's chunk list and size
        are the ones its keyed ETag was computed from (DESIGN.md §14)."""
        verified = self.store.chunk_lists
        chunks = verified.get(version_id, size, etag)
        if chunks is None:
            chunks = verify_version(self._catalog.reader(), self.store.etag_key, version_id, size, etag, path,
                                    keep=KEEP_CHUNK_LIST)
            if chunks is not None:
                verified.put(version_id, size, etag, chunks)
        return VersionReader(self._catalog, self.store.chunks, version_id, size, path, chunks)

    # -- writing -----------------------------------------------------------------

    def _parent(self, conn: sqlite3.Connection, parts: Parts, path: str) -> Node:
        if not parts:
            raise PermissionDenied(f"{path}: the root cannot be replaced")
        parent = self._tree.resolve_parent(conn, self.root_id, parts)
        if parent is None:
            raise Conflict(f"{path}: the parent folder does not exist")
        return parent

    def mkdir(self, path: str) -> Entry:
        parts = split_path(path)
        self._writable(parts, path)

        def txn(conn: sqlite3.Connection) -> Entry:
            now = clock.now()
            parent = self._parent(conn, parts, path)
            if self._tree.child(conn, parent.id, parts[-1]) is not None:
                raise AlreadyExists(f"{path}: already exists")
            nid = self._tree.insert(conn, parent.id, parts[-1], True, None, now)
            self._tree.touch(conn, parent.id, now)
            self._changed(conn, now)
            node = self._tree.get(conn, nid)
            assert node is not None
            return _entry(parts, node)

        return self._catalog.write(txn)

    def open_write(self, path: str, *, chunks: builtins.list[tuple[int, int, bytes]] | None = None,
                   looked: bool = False) -> PendingFile:
        """A file being written to ``path``. ``looked``: the caller has just seen with
        :meth:`lookup_for_write` that the parent is a folder and no folder stands at
        ``path``, so they are not looked up again here (the commit checks both again,
        in its transaction, either way)."""
        parts = split_path(path)
        self._writable(parts, path)
        if not looked:
            conn = self._catalog.reader()
            parent = self._parent(conn, parts, path)
            existing = self._tree.child(conn, parent.id, parts[-1])
            if existing is not None and existing.is_dir:
                raise Conflict(f"{path}: a folder stands there")
        elif not parts:
            raise PermissionDenied(f"{path}: the root cannot be replaced")
        return PendingFile(self, parts, self.store.new_writer(chunks))

    def _linker(self, parts: Parts, checksums: Callable[[], object] | None = None,
                ) -> Callable[[sqlite3.Connection, int, int, str, float], Entry]:
        """``checksums``: gives the version's checksum text once it is committed (the
        entry is then made without reading the row back, davbackup/linking.py)."""
        def link(conn: sqlite3.Connection, vid: int, size: int, etag: str, now: float) -> Entry:
            known = linking.UNKNOWN if checksums is None else checksums()
            return linking.link(self, conn, parts, vid, size, etag, now, known)

        return link

    def link_version(self, conn: sqlite3.Connection, path: str, vid: int, size: int, etag: str, now: float) -> Entry:
        """Inside a transaction: make version ``vid`` the content of ``path``."""
        return self._linker(split_path(path))(conn, vid, size, etag, now)

    def patch(self, path: str, start: int | None, body: "BodyReader", length: int) -> Entry:
        """Overwrite (or append, ``start=None``) ``length`` bytes as a new version.

        Only the chunks the range touches are rewritten; the others are shared with
        the previous version. The new version commits atomically; if the file changed
        in between, :class:`Conflict` and nothing changes.
        """
        parts = split_path(path)
        conn = self._catalog.reader()
        node, version_id = self._file_node(conn, parts, path)
        size = node.size
        start = size if start is None else start
        if start < 0 or start > size or length < 0:
            raise RangeError(f"{path}: range starting at {start} does not fit a file of {size} bytes")
        end = start + length
        rows = chunk_rows(conn, version_id)
        first = next((i for i, (o, n, _) in enumerate(rows) if o <= start < o + n), len(rows))
        last = next((i for i, (o, n, _) in enumerate(rows) if o < end <= o + n), None) if end < size else None
        writer = self.store.new_writer(rows[:first])
        writer.mark_existing([r[2] for r in rows[:first]])
        try:
            if first < len(rows):
                o, _n, cid = rows[first]
                writer.write(self.store.chunks.read(cid, None, path)[: start - o])
            remaining = length
            while remaining > 0:
                data = body.read(min(remaining, 1024 * 1024))
                if not data:
                    raise IncompleteBody(f"{path}: the body ended {remaining} bytes early; nothing was changed")
                writer.write(data)
                remaining -= len(data)
            if last is not None:
                o, _n, cid = rows[last]
                writer.write(self.store.chunks.read(cid, None, path)[end - o :])
                writer.extend(rows[last + 1 :])
        except BaseException:
            writer.abort()
            raise
        link = self._linker(parts)
        expected_version = version_id

        def on_commit(conn: sqlite3.Connection, vid: int, size: int, etag: str, now: float) -> Entry:
            current = self._tree.resolve(conn, self.root_id, parts)
            if current is None or current.version_id != expected_version:
                raise Conflict(f"{path}: changed by another request during the update")
            return link(conn, vid, size, etag, now)

        return writer.commit(on_commit)

    def create_empty(self, path: str) -> Entry:
        return self.open_write(path).commit()

    def delete(self, path: str) -> None:
        """Remove a file or a tree (into history). A large tree leaves the live tree in one short
        transaction and goes to history in batches (DESIGN.md §19); this returns when all of it has."""
        parts = split_path(path)
        if not parts:
            raise PermissionDenied("the root folder cannot be deleted")
        large = self._large(parts, sized=False)

        def txn(conn: sqlite3.Connection) -> int | None:
            now = clock.now()
            node = self._tree.resolve(conn, self.root_id, parts)
            if node is None:
                raise NotFound(f"{path}: no such file or folder")
            trash, removed = self._remove(conn, node, large is not None and large[0] == node.id, now)
            if node.parent_id is not None:
                self._tree.touch(conn, node.parent_id, now)
            self._changed(conn, now, -removed)
            return trash

        self._empty(self._catalog.write(txn))

    def _large(self, parts: Parts, sized: bool = True) -> tuple[int, int] | None:
        """(node ID, bytes if ``sized``) of the folder at ``parts`` if it is a large tree (read outside the writer)."""
        conn = self._catalog.reader()
        node = self._tree.resolve(conn, self.root_id, parts)
        if node is None or not node.is_dir or not tree_bulk.is_large(conn, node.id):
            return None
        return node.id, tree_bulk.subtree_bytes(conn, node.id) if sized else 0

    def _remove(self, conn: sqlite3.Connection, node: Node, large: bool, now: float) -> tuple[int | None, int]:
        """Inside a transaction: take ``node`` out of the live tree; (trash to empty or None, bytes removed now)."""
        if large:
            tree_bulk.detach(conn, self._tree, self.root_id, node, now)
            return node.id, 0
        return None, self._tree.delete_subtree(conn, self.root_id, node.id, now)

    def _empty(self, trash: int | None) -> None:
        if trash is not None:
            tree_bulk.empty_trash(self._catalog, trash)

    def _check_transfer(self, src: str, dst: str, action: str) -> tuple[Parts, Parts]:
        sparts, dparts = split_path(src), split_path(dst)
        self._writable(dparts, dst)
        if action == "move":
            self._writable(sparts, src)
        if not sparts or not dparts:
            raise PermissionDenied(f"{action} {src} -> {dst}: the root cannot be {action}d")
        if sparts == dparts:
            raise PermissionDenied(f"{action} {src}: source and destination are the same")
        if dparts[: len(sparts)] == sparts:
            raise PermissionDenied(f"{action} {src} -> {dst}: destination is inside the source")
        if sparts[: len(dparts)] == dparts:
            raise PermissionDenied(f"{action} {src} -> {dst}: destination is a folder holding the source")
        return sparts, dparts

    def _clear(self, conn: sqlite3.Connection, parent: Node, dparts: Parts, overwrite: bool,
               large: tuple[int, int] | None, now: float, label: str) -> tuple[bool, int | None, int, int]:
        """In a transaction: make room at the destination; (existed, trash to empty, bytes removed, bytes in trash)."""
        existing = self._tree.child(conn, parent.id, dparts[-1])
        if existing is None:
            return False, None, 0, 0
        if not overwrite:
            raise PreconditionFailed(f"{label}: destination exists")
        big = large is not None and large[0] == existing.id
        trash, removed = self._remove(conn, existing, big, now)
        return True, trash, removed, large[1] if big and large is not None else 0

    def _transfer(self, src: str, dst: str, overwrite: bool, action: str,
                  apply: Callable[[sqlite3.Connection, Node, Node, str, float], int]) -> bool:
        sparts, dparts = self._check_transfer(src, dst, action)
        large = self._large(dparts) if overwrite else None

        def txn(conn: sqlite3.Connection) -> tuple[bool, int | None]:
            now = clock.now()
            node = self._tree.resolve(conn, self.root_id, sparts)
            if node is None:
                raise NotFound(f"{action} {src}: no such file or folder")
            parent = self._parent(conn, dparts, dst)
            if node.is_dir and len(dparts) > len(sparts):  # nesting deeper: check the limit
                room = MAX_DEPTH - len(dparts)
                if self._tree.subtree_height(conn, node.id, room) > room:
                    raise InvalidPath(f"{action} {src} -> {dst}: would nest deeper than {MAX_DEPTH} levels")
            existed, trash, removed, pending = self._clear(conn, parent, dparts, overwrite, large, now,
                                                           f"{action} {src} -> {dst}")
            added = apply(conn, node, parent, dparts[-1], now)
            self._tree.touch(conn, parent.id, now)
            self._changed(conn, now, added - removed, pending)
            return not existed, trash

        created, trash = self._catalog.write(txn)
        self._empty(trash)
        return created

    def move(self, src: str, dst: str, overwrite: bool) -> bool:
        def apply(conn: sqlite3.Connection, node: Node, parent: Node, name: str, now: float) -> int:
            self._tree.rename(conn, self.root_id, node, parent.id, name, now)
            if node.parent_id is not None:
                self._tree.touch(conn, node.parent_id, now)
            return 0

        return self._transfer(src, dst, overwrite, "move", apply)

    def copy(self, src: str, dst: str, overwrite: bool, recursive: bool = True) -> bool:
        """Copy a file or a tree (catalog only: versions are shared). A large tree is built hidden,
        in batches, from one read snapshot of the source, and linked in one short transaction (§19)."""
        if recursive and self._large(split_path(src), sized=False) is not None:
            return tree_bulk.copy_large(self, src, dst, overwrite)

        def apply(conn: sqlite3.Connection, node: Node, parent: Node, name: str, now: float) -> int:
            return self._tree.copy_subtree(conn, node, parent.id, name, recursive, now)

        return self._transfer(src, dst, overwrite, "copy", apply)

    def set_modified(self, path: str, mtime: float) -> None:
        parts = split_path(path)

        def txn(conn: sqlite3.Connection) -> None:
            node = self._tree.resolve(conn, self.root_id, parts)
            if node is None:
                raise NotFound(f"{path}: no such file or folder")
            self._tree.touch(conn, node.id, mtime)

        self._catalog.write(txn)

    # -- dead properties ---------------------------------------------------------

    def _node_id(self, conn: sqlite3.Connection, path: str) -> int:
        node = self._tree.resolve(conn, self.root_id, split_path(path))
        if node is None:
            raise NotFound(f"{path}: no such file or folder")
        return node.id

    def get_props(self, path: str) -> dict[str, str]:
        conn = self._catalog.reader()
        return properties.read(conn, self._tree, self._node_id(conn, path), path)

    def child_props(self, path: str) -> dict[str, dict[str, str]]:
        """Dead properties of every child of a folder, by child name, in one query."""
        conn = self._catalog.reader()
        return properties.read_children(conn, self._tree, self._node_id(conn, path), path)

    def child_props_by_node(self, path: str) -> dict[int, dict[str, str]]:
        """Dead properties of every child of a folder, by child node ID, in one query."""
        conn = self._catalog.reader()
        return properties.read_children_by_node(conn, self._tree, self._node_id(conn, path), path)

    def set_prop(self, path: str, name: str, value: str) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            now = clock.now()
            properties.put(conn, self._tree, self.root_id, self._node_id(conn, path), name, value, now)
            self._changed(conn, now)

        self._catalog.write(txn)

    def remove_prop(self, path: str, name: str) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            now = clock.now()
            properties.remove(conn, self.root_id, self._node_id(conn, path), name, now)
            self._changed(conn, now)

        self._catalog.write(txn)
