"""The namespace tree in the catalog: nodes, names and versions (DESIGN.md §7.2).

Names are stored encrypted (``name_enc``, AES-256-GCM) and found through a keyed hash
of the parent ID and the name (``name_hash``), so the catalog reveals the shape of
the tree but not what anything is called. Functions here take an open connection;
callers own transactions.
"""

from __future__ import annotations

import sqlite3
import time
import unicodedata
from dataclasses import dataclass

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

    # -- changes -----------------------------------------------------------------

    def insert(
        self, conn: sqlite3.Connection, parent_id: int | None, name: str, is_dir: bool,
        version_id: int | None, now: float, created: float | None = None,
    ) -> int:
        cur = conn.execute(
            "INSERT INTO nodes(parent_id, name_hash, name_enc, is_dir, version_id, created, modified)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (parent_id, self.name_hash(parent_id, name), self.seal_name(name), int(is_dir), version_id,
             created if created is not None else now, now),
        )
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def rename(self, conn: sqlite3.Connection, node_id: int, parent_id: int, name: str) -> None:
        conn.execute(
            "UPDATE nodes SET parent_id=?, name_hash=?, name_enc=? WHERE id=?",
            (parent_id, self.name_hash(parent_id, name), self.seal_name(name), node_id),
        )

    def touch(self, conn: sqlite3.Connection, node_id: int, now: float) -> None:
        conn.execute("UPDATE nodes SET modified=? WHERE id=?", (now, node_id))

    def delete_subtree(self, conn: sqlite3.Connection, node_id: int) -> int:
        """Remove a node with everything under it, its properties and unused versions."""
        ids = self.subtree_ids(conn, node_id)
        versions: set[int] = set()
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            versions.update(
                r[0] for r in conn.execute(
                    f"SELECT version_id FROM nodes WHERE id IN ({marks}) AND version_id IS NOT NULL", part
                )
            )
            conn.execute(f"DELETE FROM props WHERE node_id IN ({marks})", part)
            conn.execute(f"DELETE FROM nodes WHERE id IN ({marks})", part)
        for vid in versions:
            drop_version_if_unused(conn, vid)
        return len(ids)

    def copy_subtree(
        self, conn: sqlite3.Connection, source: Node, parent_id: int, name: str, recursive: bool, now: float
    ) -> int:
        """Copy a node (and, if ``recursive``, its descendants): versions are shared, not copied."""
        new_id = self.insert(conn, parent_id, name, source.is_dir, source.version_id, now)
        conn.execute(
            "INSERT INTO props(node_id, name, value_enc) SELECT ?, name, value_enc FROM props WHERE node_id=?",
            (new_id, source.id),
        )
        if source.is_dir and recursive:
            for child in self.children(conn, source.id):
                self.copy_subtree(conn, child, new_id, child.name, True, now)
        return new_id


def drop_version_if_unused(conn: sqlite3.Connection, version_id: int) -> None:
    """A version no node points at is marked orphaned; gc deletes it after the grace
    period (readers that opened it before keep reading), then its chunks are garbage."""
    if conn.execute("SELECT 1 FROM nodes WHERE version_id=? LIMIT 1", (version_id,)).fetchone():
        return
    conn.execute("UPDATE versions SET orphaned=? WHERE id=?", (time.time(), version_id))
