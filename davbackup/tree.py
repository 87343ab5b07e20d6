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

from davbackup import clock
from davbackup import crypto
from davbackup.errors import IntegrityError, InvalidPath

MAX_NAME_BYTES = 1024
MAX_DEPTH = 256
NAME_AD = b"davbackup-name-v1"
CHECKSUMS_AD = b"davbackup-checksums-v1"

NODE_COLUMNS = (
    "n.id, n.parent_id, n.name_enc, n.is_dir, n.version_id, n.created, n.modified, v.size, v.etag, v.checksums"
)
NODE_FROM = "nodes n LEFT JOIN versions v ON v.id = n.version_id"
HISTORY_COLUMNS = NODE_COLUMNS.replace("n.id,", "n.node_id,", 1)
HISTORY_FROM = "node_history n LEFT JOIN versions v ON v.id = n.version_id"


def split_path(path: str) -> list[str]:
    """``"/a/b/"`` -> ``["a", "b"]``; refuses traversal, NUL, control bytes and over-long names."""
    parts = [p for p in path.split("/") if p]
    if len(parts) > MAX_DEPTH:
        raise InvalidPath(f"{path!r}: too deep")
    for part in parts:
        if part in (".", ".."):
            raise InvalidPath(f"{path!r}: '.' and '..' are not allowed in paths")
        if any(unicodedata.category(ch) == "Cc" for ch in part):
            raise InvalidPath(f"{path!r}: control characters in name")
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


class Tree:
    def __init__(self, name_key: bytes, name_hash_key: bytes) -> None:
        self._name_key = name_key
        self._hash_key = name_hash_key

    # -- names -------------------------------------------------------------------

    def name_hash(self, parent_id: int | None, name: str) -> bytes:
        prefix = (parent_id or 0).to_bytes(8, "big")
        return crypto.keyed_hash(self._hash_key, prefix + name.encode("utf-8"), 16)

    def seal_name(self, name: str) -> bytes:
        return crypto.seal_small(self._name_key, name.encode("utf-8"), NAME_AD)

    def open_name(self, blob: bytes, node_id: int) -> str:
        try:
            return crypto.open_small(self._name_key, blob, NAME_AD).decode("utf-8")
        except crypto.DecryptionFailed as exc:
            raise IntegrityError(f"catalog node {node_id}: its encrypted name fails verification") from exc

    def seal_checksums(self, text: str | None) -> bytes | None:
        return None if text is None else crypto.seal_small(self._name_key, text.encode("ascii"), CHECKSUMS_AD)

    def _open_checksums(self, blob: bytes | None, node_id: int) -> str | None:
        if blob is None:
            return None
        try:
            return crypto.open_small(self._name_key, blob, CHECKSUMS_AD).decode("ascii")
        except crypto.DecryptionFailed as exc:
            raise IntegrityError(f"catalog node {node_id}: its checksums fail verification") from exc

    def _node(self, row: tuple) -> Node:
        nid, parent, name_enc, is_dir, version_id, created, modified, size, etag, checksums = row
        if is_dir:
            size, etag, checksums = 0, f"d{nid}-{int(modified * 1000)}", None
        return Node(
            nid, parent, self.open_name(name_enc, nid), bool(is_dir), version_id, created, modified,
            size or 0, etag or "", self._open_checksums(checksums, nid),
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
        node_id = root_id
        node: Node | None = None
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                return self.child(conn, node_id, part)
            row = conn.execute(
                "SELECT id, is_dir FROM nodes WHERE parent_id=? AND name_hash=?",
                (node_id, self.name_hash(node_id, part)),
            ).fetchone()
            if row is None or not row[1]:
                return None
            node_id = row[0]
        return node

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
        cur = conn.execute(
            "INSERT INTO nodes(parent_id, name_hash, name_enc, is_dir, version_id, created, modified, born)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (parent_id, self.name_hash(parent_id, name), self.seal_name(name), int(is_dir), version_id,
             created if created is not None else now, now, now),
        )
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def rename(self, conn: sqlite3.Connection, owner: int, node_id: int, parent_id: int, name: str, now: float) -> None:
        archive_nodes(conn, owner, [node_id], now)
        conn.execute(
            "UPDATE nodes SET parent_id=?, name_hash=?, name_enc=?, born=? WHERE id=?",
            (parent_id, self.name_hash(parent_id, name), self.seal_name(name), now, node_id),
        )

    def set_version(self, conn: sqlite3.Connection, owner: int, node: Node, version_id: int, now: float) -> None:
        """Make ``version_id`` the node's content; the replaced version stays in history."""
        archive_nodes(conn, owner, [node.id], now)
        conn.execute("UPDATE nodes SET version_id=?, modified=?, born=? WHERE id=?", (version_id, now, now, node.id))
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
        conn.execute(
            "INSERT INTO props(node_id, name, value_enc, born) SELECT ?, name, value_enc, ? FROM props WHERE node_id=?",
            (new_id, now, source.id),
        )
        copied = source.size if not source.is_dir else 0
        if source.is_dir and recursive:
            for child in self.children(conn, source.id):
                copied += self.copy_subtree(conn, child, new_id, child.name, True, now)
        return copied

    def purge_owner(self, conn: sqlite3.Connection, root_id: int) -> None:
        """Remove a user's whole tree and its history (the user is being removed)."""
        ids = self.subtree_ids(conn, root_id)
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
    conn.execute("UPDATE versions SET orphaned=? WHERE id=?", (now if now is not None else clock.now(), version_id))
