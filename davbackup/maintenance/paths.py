"""Turn catalog IDs back into readable paths for reports."""

from __future__ import annotations

import sqlite3

from davbackup.errors import IntegrityError
from davbackup.history import format_moment
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
    """Where a version is used: ``user:/path`` (current) and ``user:/path@<T> (history)``
    for each state that had it; the path is the node's current or last one."""
    found = [node_path(conn, tree, r[0]) + " (current)"
             for r in conn.execute("SELECT id FROM nodes WHERE version_id=?", (version_id,))]
    for node_id, parent, name_enc, born, died in conn.execute(
        "SELECT node_id, parent_id, name_enc, born, died FROM node_history WHERE version_id=? ORDER BY born",
        (version_id,),
    ).fetchall():
        try:
            name = tree.open_name(name_enc, node_id, parent, version_id)
        except IntegrityError:
            name = f"<node {node_id}: bad name>"
        live_parent = conn.execute("SELECT 1 FROM nodes WHERE id=?", (parent,)).fetchone()
        folder = node_path(conn, tree, parent) if live_parent else f"<deleted folder {parent}>"
        found.append(f"{folder.rstrip('/')}/{name} as of {format_moment(int(born))}"
                     f" (history, replaced {format_moment(int(died))})")
    return found or [f"<version {version_id}>"]
