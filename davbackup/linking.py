"""Linking a committed version to its path: the last step of every file write
(DESIGN.md §10), inside the write's catalog transaction.

It reads only what the change needs: the parent folder's ID (the path walked by IDs,
no name opened), the entry at the path (its name is sealed again with the new
version) and, with the user's usage charged, the quota in the same statement. The
answer is made from what was just written, so no row is read back when the caller
knows the version's checksum text.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from davbackup.entry import Entry
from davbackup.entry import entry_of as _entry
from davbackup.errors import Conflict, PermissionDenied
from davbackup.tree import join_path

if TYPE_CHECKING:
    from davbackup.fs import Namespace

#: the caller does not know the version's checksum text: the entry is read back
UNKNOWN = object()


def parent_id(ns: "Namespace", conn: sqlite3.Connection, parts: list[str], path: str) -> int:
    """The ID of the folder that holds ``parts[-1]`` (:class:`Conflict` if there is none)."""
    if not parts:
        raise PermissionDenied(f"{path}: the root cannot be replaced")
    if len(parts) == 1:  # the root itself: still there (a removed user has none)
        found: int | None = ns._parent(conn, parts, path).id
    else:
        found = ns._tree.folder_id(conn, ns.root_id, parts[:-1])
    if found is None:
        raise Conflict(f"{path}: the parent folder does not exist")
    return found


def link(ns: "Namespace", conn: sqlite3.Connection, parts: list[str], vid: int, size: int, etag: str, now: float,
         checksums: object = UNKNOWN) -> Entry:
    """Make version ``vid`` the content of the file at ``parts`` (created if missing);
    ``checksums``: the version's checksum text (or None), if the caller knows it."""
    path = join_path(parts)
    tree = ns._tree
    parent = parent_id(ns, conn, parts, path)
    existing = tree.child(conn, parent, parts[-1])
    if existing is not None:
        if existing.is_dir:
            raise Conflict(f"{path}: a folder stands there")
        tree.set_version(conn, ns.root_id, existing, vid, now)
        ns._changed(conn, now, size - existing.size)
        nid, created = existing.id, existing.created
    else:
        nid = tree.insert(conn, parent, parts[-1], False, vid, now)
        tree.touch(conn, parent, now)
        ns._changed(conn, now, size)
        created = now
    if checksums is UNKNOWN:
        node = tree.get(conn, nid)
        assert node is not None
        return _entry(parts, node)
    assert checksums is None or isinstance(checksums, str)
    return Entry(path, parts[-1], False, size, etag, created, now, nid, checksums, vid)
