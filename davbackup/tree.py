"""The namespace tree in the catalog: nodes, names and versions (DESIGN.md §7.2).

Names are stored encrypted (``name_enc``, AES-256-GCM) and found through a keyed hash
of the parent ID and the name (``name_hash``), so the catalog reveals the shape of
the tree but not what anything is called. Functions here take an open connection;
callers own transactions.
"""

from __future__ import annotations

import math
import sqlite3
import unicodedata
from dataclasses import dataclass
from typing import Any

from davbackup import clock, crypto
from davbackup.catalog import read_meta, write_meta
from davbackup.errors import IntegrityError, InvalidPath
from davbackup.versions import mark_orphaned

MAX_NAME_BYTES = 1024
MAX_DEPTH = 256
#: parent IDs at or above TRASH mark the top of a detached tree: TRASH + owner's root ID
#: (a large deletion being moved to history), STAGING + owner (a large copy being
#: built); no path reaches them (davbackup/tree_bulk.py, DESIGN.md §19)
TRASH = 1 << 62
STAGING = TRASH + (1 << 61)
NAME_AD_V1 = b"davbackup-name-v1"  # schema 1 and before the row upgrade: not bound to the row
NAME_AD = b"davbackup-name-v2"  # + node id, parent id, version id (8 bytes BE each; 0 for none)
CHECKSUMS_AD = b"davbackup-checksums-v1"

NODE_COLUMNS = (
    "n.id, n.parent_id, n.name_enc, n.is_dir, n.version_id, n.created, n.modified, v.size, v.etag, v.checksums"
)
NODE_FROM = "nodes n LEFT JOIN versions v ON v.id = n.version_id"
HISTORY_COLUMNS = NODE_COLUMNS.replace("n.id,", "n.node_id,", 1)
HISTORY_FROM = "node_history n LEFT JOIN versions v ON v.id = n.version_id"


def _is_noncharacter(ch: str) -> bool:
    """U+FDD0..U+FDEF and the last two code points of every plane (U+FFFE, U+FFFF, ...)."""
    cp = ord(ch)
    return 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE


def split_path(path: str) -> list[str]:
    """``"/a/b/"`` -> ``["a", "b"]``; refuses traversal, NUL, control bytes, Unicode
    noncharacters (XML cannot carry them), names that are a traversal once ``\\`` is
    read as a separator (Windows), and over-long names."""
    parts = [p for p in path.split("/") if p]
    if len(parts) > MAX_DEPTH:
        raise InvalidPath(f"{path!r}: too deep")
    for part in parts:
        if part in (".", ".."):
            raise InvalidPath(f"{path!r}: '.' and '..' are not allowed in paths")
        if not (part.isascii() and part.isprintable()) and any(  # printable ASCII has neither
                unicodedata.category(ch) == "Cc" or _is_noncharacter(ch) for ch in part):
            raise InvalidPath(f"{path!r}: control characters or noncharacters in name")
        if "\\" in part and any(seg in (".", "..") for seg in part.split("\\")):
            raise InvalidPath(f"{path!r}: '.' and '..' are not allowed between backslashes")
        try:
            encoded = part.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise InvalidPath(f"{path!r}: not valid Unicode") from exc
        if len(encoded) > MAX_NAME_BYTES:
            raise InvalidPath(f"{path!r}: name longer than {MAX_NAME_BYTES} bytes")
    return parts


def join_path(parts: list[str]) -> str:
    return "/" + "/".join(parts)


@dataclass(frozen=True)
class Node:
    id: int
    parent_id: int | None
    name: str
    is_dir: bool
    version_id: int | None
    created: float
    modified: float
    size: int
    etag: str
    checksums: str | None = None  # "SHA1:<hex> MD5:<hex>" when the client sent a verified SHA-1


PROP_AD_V1 = b"davbackup-prop-v1"  # before the row upgrade: not bound to the row
PROP_AD = b"davbackup-prop-v2"  # + node id (8 bytes BE) + the property's name (UTF-8)


def prop_ad(node_id: int, name: str) -> bytes:
    return PROP_AD + node_id.to_bytes(8, "big") + name.encode("utf-8")


def name_ad(node_id: int, parent_id: int | None, version_id: int | None) -> bytes:
    """Associated data of a sealed name: the name is valid only on its own row, under
    its own parent, pointing at its own version (DESIGN.md §7.2)."""
    return NAME_AD + node_id.to_bytes(8, "big") + (parent_id or 0).to_bytes(8, "big") + (version_id or 0).to_bytes(8, "big")


class Tree:
    def __init__(self, name_key: bytes, name_hash_key: bytes, *, legacy_names: bool = False) -> None:
        self._name_key = name_key
        self._hash_key = name_hash_key
        #: True only while a catalog from before row authentication is read without
        #: being upgraded (read-only mode): names sealed the old way are accepted.
        self.legacy_names = legacy_names

    # -- names -------------------------------------------------------------------

    def name_hash(self, parent_id: int | None, name: str) -> bytes:
        prefix = (parent_id or 0).to_bytes(8, "big")
        return crypto.keyed_hash(self._hash_key, prefix + name.encode("utf-8"), 16)

    def seal_name(self, name: str, node_id: int, parent_id: int | None, version_id: int | None) -> bytes:
        return crypto.seal_small(self._name_key, name.encode("utf-8"), name_ad(node_id, parent_id, version_id))

    def open_name(self, blob: bytes, node_id: int, parent_id: int | None, version_id: int | None) -> str:
        try:
            return crypto.open_small(self._name_key, blob, name_ad(node_id, parent_id, version_id)).decode("utf-8")
        except crypto.DecryptionFailed as exc:
            if self.legacy_names:
                try:
                    return crypto.open_small(self._name_key, blob, NAME_AD_V1).decode("utf-8")
                except crypto.DecryptionFailed:
                    pass
            raise IntegrityError(
                f"catalog node {node_id}: its name fails verification (the row was altered or moved)"
            ) from exc

    # -- dead property values -------------------------------------------------------

    def seal_prop(self, node_id: int, name: str, value: str) -> bytes:
        return crypto.seal_small(self._name_key, value.encode("utf-8"), prop_ad(node_id, name))

    def open_prop(self, blob: bytes, node_id: int, name: str, where: str) -> str:
        try:
            return crypto.open_small(self._name_key, blob, prop_ad(node_id, name)).decode("utf-8")
        except crypto.DecryptionFailed as exc:
            if self.legacy_names:
                try:
                    return crypto.open_small(self._name_key, blob, PROP_AD_V1).decode("utf-8")
                except crypto.DecryptionFailed:
                    pass
            raise IntegrityError(f"{where}: property {name} fails verification (the row was altered or moved)") from exc

    def reseal_prop(self, blob: bytes, from_node: int, to_node: int, name: str) -> bytes:
        """A property value copied to another node is sealed again for that node."""
        return self.seal_prop(to_node, name, self.open_prop(blob, from_node, name, f"catalog node {from_node}"))

    def seal_checksums(self, text: str | None) -> bytes | None:
        return None if text is None else crypto.seal_small(self._name_key, text.encode("ascii"), CHECKSUMS_AD)

    def open_checksums(self, blob: bytes | None, node_id: int) -> str | None:
        if blob is None:
            return None
        try:
            return crypto.open_small(self._name_key, blob, CHECKSUMS_AD).decode("ascii")
        except crypto.DecryptionFailed as exc:
            raise IntegrityError(f"catalog node {node_id}: its checksums fail verification") from exc

    def _node(self, row: tuple[Any, ...]) -> Node:
        nid, parent, name_enc, is_dir, version_id, created, modified, size, etag, checksums = row
        if is_dir:
            size, etag, checksums = 0, f"d{nid}-{int(modified * 1000)}", None
        return Node(
            nid, parent, self.open_name(name_enc, nid, parent, version_id), bool(is_dir), version_id, created, modified,
            size or 0, etag or "", self.open_checksums(checksums, nid),
        )

    # -- queries -----------------------------------------------------------------

    def get(self, conn: sqlite3.Connection, node_id: int) -> Node | None:
        row = conn.execute(f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.id=?", (node_id,)).fetchone()
        return self._node(row) if row else None

    def child(self, conn: sqlite3.Connection, parent_id: int, name: str) -> Node | None:
        row = conn.execute(
            f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.parent_id=? AND n.name_hash=?",
            (parent_id, self.name_hash(parent_id, name)),
        ).fetchone()
        return self._node(row) if row else None

    def children(self, conn: sqlite3.Connection, parent_id: int) -> list[Node]:
        rows = conn.execute(f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.parent_id=?", (parent_id,))
        nodes = [self._node(r) for r in rows]
        nodes.sort(key=lambda n: n.name)
        return nodes

    def resolve(self, conn: sqlite3.Connection, root_id: int, parts: list[str]) -> Node | None:
        if not parts:
            return self.get(conn, root_id)
        parent_id = self.folder_id(conn, root_id, parts[:-1])
        return None if parent_id is None else self.child(conn, parent_id, parts[-1])

    def folder_id(self, conn: sqlite3.Connection, root_id: int, parts: list[str]) -> int | None:
        """The ID of the folder at ``parts`` (None if missing or not a folder): IDs only,
        no name opened (:meth:`resolve` walks the folders above its target so)."""
        node_id = root_id
        for part in parts:
            row = conn.execute(
                "SELECT id, is_dir FROM nodes WHERE parent_id=? AND name_hash=?",
                (node_id, self.name_hash(node_id, part)),
            ).fetchone()
            if row is None or not row[1]:
                return None
            node_id = row[0]
        return node_id

    def resolve_parent(self, conn: sqlite3.Connection, root_id: int, parts: list[str]) -> Node | None:
        """The collection that holds ``parts[-1]`` (None if missing or not a collection)."""
        node = self.resolve(conn, root_id, parts[:-1])
        return node if node is not None and node.is_dir else None

    def subtree_ids(self, conn: sqlite3.Connection, node_id: int) -> list[int]:
        rows = conn.execute(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id)"
            " SELECT id FROM sub",
            (node_id,),
        )
        return [r[0] for r in rows]

    # -- points in time ------------------------------------------------------------
    #
    # The state at instant ``t`` is every live row born before ``t`` plus every
    # history row with born < t <= died (DESIGN.md §15).

    _AT = (
        f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE {{where}} AND n.born < ?"
        f" UNION ALL SELECT {HISTORY_COLUMNS} FROM {HISTORY_FROM}"
        f" WHERE {{hwhere}} AND n.born < ? AND n.died >= ?"
    )

    def child_at(self, conn: sqlite3.Connection, parent_id: int, name: str, t: float) -> Node | None:
        h = self.name_hash(parent_id, name)
        sql = self._AT.format(where="n.parent_id=? AND n.name_hash=?", hwhere="n.parent_id=? AND n.name_hash=?")
        row = conn.execute(sql, (parent_id, h, t, parent_id, h, t, t)).fetchone()
        return self._node(row) if row else None

    def children_at(self, conn: sqlite3.Connection, parent_id: int, t: float) -> list[Node]:
        sql = self._AT.format(where="n.parent_id=?", hwhere="n.parent_id=?")
        nodes = [self._node(r) for r in conn.execute(sql, (parent_id, t, parent_id, t, t))]
        nodes.sort(key=lambda n: n.name)
        return nodes

    def resolve_at(self, conn: sqlite3.Connection, root_id: int, parts: list[str], t: float) -> Node | None:
        node = self.get(conn, root_id)
        for part in parts:
            if node is None or not node.is_dir:
                return None
            node = self.child_at(conn, node.id, part, t)
        return node

    def states(self, conn: sqlite3.Connection, node_id: int) -> list[tuple[Node, float]]:
        """Every kept state of one node with the time it began, oldest first."""
        rows = conn.execute(
            f"SELECT {NODE_COLUMNS}, n.born FROM {NODE_FROM} WHERE n.id=?"
            f" UNION ALL SELECT {HISTORY_COLUMNS}, n.born FROM {HISTORY_FROM} WHERE n.node_id=?",
            (node_id, node_id),
        ).fetchall()
        states = [(self._node(r[:-1]), float(r[-1])) for r in rows]
        states.sort(key=lambda s: s[1])
        return states

    def last_node_at_path(self, conn: sqlite3.Connection, root_id: int, parts: list[str]) -> int | None:
        """The node that most recently had this path, live or deleted (for versions)."""
        node_id: int | None = root_id
        for part in parts:
            if node_id is None:
                return None
            h = self.name_hash(node_id, part)
            row = conn.execute("SELECT id FROM nodes WHERE parent_id=? AND name_hash=?", (node_id, h)).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT node_id FROM node_history WHERE parent_id=? AND name_hash=? ORDER BY died DESC LIMIT 1",
                    (node_id, h),
                ).fetchone()
            node_id = row[0] if row else None
        return node_id

    def subtree_height(self, conn: sqlite3.Connection, node_id: int, limit: int) -> int:
        """Levels below ``node_id`` (0 for a file or an empty folder), counted up to
        ``limit + 1`` at most: only folders are walked, and no deeper than needed."""
        row = conn.execute(
            "WITH RECURSIVE sub(id, d) AS (SELECT ?, 0 UNION ALL"
            " SELECT n.id, sub.d + 1 FROM nodes n JOIN sub ON n.parent_id = sub.id"
            " WHERE n.is_dir = 1 AND sub.d < ?)"
            " SELECT max(sub.d + EXISTS(SELECT 1 FROM nodes c WHERE c.parent_id = sub.id)) FROM sub",
            (node_id, limit),
        ).fetchone()
        return int(row[0] or 0)

    # -- changes -----------------------------------------------------------------
    #
    # Every change keeps the state it replaces: the old row goes to ``node_history``
    # with the interval [born, died) during which it was current (DESIGN.md §15).
    # A state that did not outlive the second it was born in is never visible at any
    # point in time (changes within one second coalesce), so it is not kept.

    def insert(
        self, conn: sqlite3.Connection, parent_id: int | None, name: str, is_dir: bool,
        version_id: int | None, now: float, created: float | None = None,
    ) -> int:
        nid = new_node_id(conn)
        conn.execute(
            "INSERT INTO nodes(id, parent_id, name_hash, name_enc, is_dir, version_id, created, modified, born)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (nid, parent_id, self.name_hash(parent_id, name), self.seal_name(name, nid, parent_id, version_id),
             int(is_dir), version_id, created if created is not None else now, now, now),
        )
        return nid

    def rename(self, conn: sqlite3.Connection, owner: int, node: Node, parent_id: int, name: str, now: float) -> None:
        archive_nodes(conn, owner, [node.id], now)
        conn.execute(
            "UPDATE nodes SET parent_id=?, name_hash=?, name_enc=?, born=? WHERE id=?",
            (parent_id, self.name_hash(parent_id, name), self.seal_name(name, node.id, parent_id, node.version_id),
             now, node.id),
        )

    def set_version(self, conn: sqlite3.Connection, owner: int, node: Node, version_id: int, now: float) -> None:
        """Make ``version_id`` the node's content; the replaced version stays in history."""
        archive_nodes(conn, owner, [node.id], now)
        conn.execute(
            "UPDATE nodes SET version_id=?, name_enc=?, modified=?, born=? WHERE id=?",
            (version_id, self.seal_name(node.name, node.id, node.parent_id, version_id), now, now, node.id),
        )
        if node.version_id is not None and node.version_id != version_id:
            drop_version_if_unused(conn, node.version_id, now)

    def touch(self, conn: sqlite3.Connection, node_id: int, now: float) -> None:
        """A folder's modification time changes in place (it is not part of history)."""
        conn.execute("UPDATE nodes SET modified=? WHERE id=?", (now, node_id))

    def delete_subtree(self, conn: sqlite3.Connection, owner: int, node_id: int, now: float) -> int:
        """Remove a node with everything under it from the live tree; returns the
        logical bytes of the files removed. History keeps them."""
        ids = self.subtree_ids(conn, node_id)
        versions: set[int] = set()
        removed = 0
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for vid, size in conn.execute(
                f"SELECT n.version_id, v.size FROM nodes n JOIN versions v ON v.id = n.version_id"
                f" WHERE n.id IN ({marks})", part,
            ):
                versions.add(vid)
                removed += size
            archive_nodes(conn, owner, part, now)
            archive_props(conn, owner, part, None, now)
            conn.execute(f"DELETE FROM props WHERE node_id IN ({marks})", part)
            conn.execute(f"DELETE FROM nodes WHERE id IN ({marks})", part)
        for vid in versions:
            drop_version_if_unused(conn, vid, now)
        return removed

    def copy_subtree(
        self, conn: sqlite3.Connection, source: Node, parent_id: int, name: str, recursive: bool, now: float
    ) -> int:
        """Copy a live node (and, if ``recursive``, its descendants): versions are shared,
        not copied. Returns the logical bytes of the files copied."""
        new_id = self.insert(conn, parent_id, name, source.is_dir, source.version_id, now)
        props = conn.execute("SELECT name, value_enc FROM props WHERE node_id=?", (source.id,)).fetchall()
        conn.executemany(
            "INSERT INTO props(node_id, name, value_enc, born) VALUES (?, ?, ?, ?)",
            [(new_id, prop, self.reseal_prop(blob, source.id, new_id, prop), now) for prop, blob in props],
        )
        copied = source.size if not source.is_dir else 0
        if source.is_dir and recursive:
            for child in self.children(conn, source.id):
                copied += self.copy_subtree(conn, child, new_id, child.name, True, now)
        return copied

    def purge_owner(self, conn: sqlite3.Connection, root_id: int) -> None:
        """Remove a user's whole tree, its detached trees and its history (the user is being removed)."""
        ids = self.subtree_ids(conn, root_id)
        for (top,) in conn.execute(
            "SELECT id FROM nodes WHERE parent_id IN (?, ?)", (TRASH + root_id, STAGING + root_id)
        ).fetchall():
            ids += self.subtree_ids(conn, top)
        versions = {r[0] for r in conn.execute(
            "SELECT DISTINCT version_id FROM node_history WHERE owner=? AND version_id IS NOT NULL", (root_id,))}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            versions.update(r[0] for r in conn.execute(
                f"SELECT version_id FROM nodes WHERE id IN ({marks}) AND version_id IS NOT NULL", part))
            conn.execute(f"DELETE FROM props WHERE node_id IN ({marks})", part)
            conn.execute(f"DELETE FROM nodes WHERE id IN ({marks})", part)
        conn.execute("DELETE FROM node_history WHERE owner=?", (root_id,))
        conn.execute("DELETE FROM props_history WHERE owner=?", (root_id,))
        conn.execute("DELETE FROM moments WHERE owner=?", (root_id,))
        for vid in versions:
            drop_version_if_unused(conn, vid)


def new_node_id(conn: sqlite3.Connection) -> int:
    """A node ID never used before, live or in history (SQLite would reuse the ID of a
    deleted last row, and history must never mix two nodes)."""
    row = conn.execute(
        "SELECT max(coalesce((SELECT max(id) FROM nodes), 0), coalesce((SELECT max(node_id) FROM node_history), 0))"
    ).fetchone()
    return int(row[0]) + 1


def visible_second(born: float, now: float) -> bool:
    """Whether a state born at ``born`` and replaced at ``now`` was current at the end
    of some second (only then can a point in time show it)."""
    return now >= math.floor(born) + 1


def archive_nodes(conn: sqlite3.Connection, owner: int, node_ids: list[int], now: float) -> None:
    """Copy the current rows of ``node_ids`` into history, current until ``now``."""
    marks = ",".join("?" * len(node_ids))
    conn.execute(
        "INSERT INTO node_history(node_id, owner, parent_id, name_hash, name_enc, is_dir, version_id,"
        " created, modified, born, died)"
        f" SELECT id, ?, parent_id, name_hash, name_enc, is_dir, version_id, created, modified, born, ?"
        f" FROM nodes WHERE id IN ({marks}) AND ? >= CAST(born AS INTEGER) + 1",
        [owner, now, *node_ids, now],
    )


def archive_props(
    conn: sqlite3.Connection, owner: int, node_ids: list[int], name: str | None, now: float
) -> None:
    """Copy current dead properties of ``node_ids`` (all, or just ``name``) into history."""
    marks = ",".join("?" * len(node_ids))
    only = " AND name=?" if name is not None else ""
    params: list[object] = [owner, now, *node_ids]
    if name is not None:
        params.append(name)
    params.append(now)
    conn.execute(
        "INSERT INTO props_history(node_id, owner, name, value_enc, born, died)"
        f" SELECT node_id, ?, name, value_enc, born, ? FROM props WHERE node_id IN ({marks}){only}"
        " AND ? >= CAST(born AS INTEGER) + 1",
        params,
    )


def record_moment(conn: sqlite3.Connection, owner: int, now: float) -> None:
    """Note that the user's tree changed during this second (a point in time)."""
    conn.execute("INSERT OR IGNORE INTO moments(owner, second) VALUES (?, ?)", (owner, math.floor(now)))


def drop_version_if_unused(conn: sqlite3.Connection, version_id: int, now: float | None = None) -> None:
    """A version neither the live tree nor history points at is marked orphaned; gc
    deletes it after the grace period (readers that opened it before keep reading),
    then its chunks are garbage."""
    if conn.execute("SELECT 1 FROM nodes WHERE version_id=? LIMIT 1", (version_id,)).fetchone():
        return
    if conn.execute("SELECT 1 FROM node_history WHERE version_id=? LIMIT 1", (version_id,)).fetchone():
        return
    mark_orphaned(conn, version_id, now if now is not None else clock.now())


def authenticate_rows(conn: sqlite3.Connection, tree: Tree) -> int:
    """Seal every name and property value again bound to its row (DESIGN.md §7.2, §7.4).

    Catalogs written before row authentication sealed names and values with a
    constant associated data; this runs once, in one transaction, when such a
    repository is first opened for writing, and records ``meta.row_auth``. Returns
    the number of values sealed again.
    """
    if read_meta(conn, "row_auth") is not None:
        return 0
    legacy = Tree(tree._name_key, tree._hash_key, legacy_names=True)
    count = 0
    for nid, parent, version, blob in conn.execute(
        "SELECT id, parent_id, version_id, name_enc FROM nodes"
    ).fetchall():
        name = legacy.open_name(blob, nid, parent, version)
        conn.execute("UPDATE nodes SET name_enc=? WHERE id=?", (tree.seal_name(name, nid, parent, version), nid))
        count += 1
    for rowid, nid, parent, version, blob in conn.execute(
        "SELECT rowid, node_id, parent_id, version_id, name_enc FROM node_history"
    ).fetchall():
        name = legacy.open_name(blob, nid, parent, version)
        conn.execute(
            "UPDATE node_history SET name_enc=? WHERE rowid=?", (tree.seal_name(name, nid, parent, version), rowid)
        )
        count += 1
    for nid, prop, blob in conn.execute("SELECT node_id, name, value_enc FROM props").fetchall():
        value = legacy.open_prop(blob, nid, prop, f"catalog node {nid}")
        conn.execute(
            "UPDATE props SET value_enc=? WHERE node_id=? AND name=?", (tree.seal_prop(nid, prop, value), nid, prop)
        )
        count += 1
    for rowid, nid, prop, blob in conn.execute("SELECT rowid, node_id, name, value_enc FROM props_history").fetchall():
        value = legacy.open_prop(blob, nid, prop, f"catalog node {nid}")
        conn.execute("UPDATE props_history SET value_enc=? WHERE rowid=?", (tree.seal_prop(nid, prop, value), rowid))
        count += 1
    write_meta(conn, "row_auth", "1")
    return count
