"""Turn catalog IDs back into readable paths for reports."""

from __future__ import annotations

import sqlite3

from davbackup.errors import IntegrityError
from davbackup.tree import Tree


def node_path(conn: sqlite3.Connection, tree: Tree, node_id: int) -> str:
    """``user:/a/b`` for a node, decrypting names on the way up."""
    parts: list[str] = []
    current: int | None = node_id
    seen = 0
    while current is not None and seen < 300:
        row = conn.execute("SELECT parent_id, name_enc, version_id FROM nodes WHERE id=?", (current,)).fetchone()
        if row is None:
            return "<detached>/" + "/".join(reversed(parts))
        parent, name_enc, version_id = row
        if parent is None:
            user = conn.execute("SELECT name FROM users WHERE root_id=?", (current,)).fetchone()
            return f"{user[0] if user else '?'}:/" + "/".join(reversed(parts))
        try:
            parts.append(tree.open_name(name_enc, current, parent, version_id))
        except IntegrityError:
            parts.append(f"<node {current}: bad name>")
        current = parent
        seen += 1
    return "<cycle>/" + "/".join(reversed(parts))


def version_paths(conn: sqlite3.Connection, tree: Tree, version_id: int) -> list[str]:
    ids = [r[0] for r in conn.execute("SELECT id FROM nodes WHERE version_id=?", (version_id,))]
    return [node_path(conn, tree, i) for i in ids] or [f"<version {version_id}>"]
