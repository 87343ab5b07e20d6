"""Whole-tree reads for check, stats and reports (DESIGN.md §7.2, §12, §15).

The tree's own modules (davbackup/tree.py, tree_bulk.py, properties.py, history.py,
retention.py) change nodes and properties; this one reads all of them at once, for
``davbackup check`` and ``davbackup stats``, and turns catalog IDs back into readable
paths for their reports (``user:/a/b``, decrypting names on the way up).
"""

from __future__ import annotations

import sqlite3

from davbackup.errors import IntegrityError
from davbackup.history import format_moment
from davbackup.tree import TRASH, Tree
from davbackup.users import name_of_root


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
            user = name_of_root(conn, current)
            return f"{user if user is not None else '?'}:/" + "/".join(reversed(parts))
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


# -- check ---------------------------------------------------------------------------


def orphaned_nodes(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    """``(node, parent)`` of live nodes whose parent does not exist (trash and staging excepted)."""
    return conn.execute(
        "SELECT n.id, n.parent_id FROM nodes n WHERE n.parent_id IS NOT NULL AND n.parent_id < ?"
        " AND NOT EXISTS (SELECT 1 FROM nodes p WHERE p.id = n.parent_id)", (TRASH,)
    ).fetchall()


def unfinished_bulk_count(conn: sqlite3.Connection) -> int:
    """Large deletions or copies not finished yet (trees under the trash or staging, §19)."""
    return int(conn.execute("SELECT count(*) FROM nodes WHERE parent_id >= ?", (TRASH,)).fetchone()[0])


def all_names(conn: sqlite3.Connection) -> list[tuple[int, int, int | None, bytes]]:
    """``(node, parent, version, sealed name)`` of every non-root node, live and in history."""
    return conn.execute(
        "SELECT id, parent_id, version_id, name_enc FROM nodes WHERE parent_id IS NOT NULL"
        " UNION ALL SELECT node_id, parent_id, version_id, name_enc FROM node_history"
    ).fetchall()


def all_props(conn: sqlite3.Connection) -> list[tuple[int, str, bytes]]:
    """``(node, property name, sealed value)`` of every property, live and in history."""
    return conn.execute(
        "SELECT node_id, name, value_enc FROM props UNION ALL SELECT node_id, name, value_enc FROM props_history"
    ).fetchall()


def files_without_version(conn: sqlite3.Connection) -> list[int]:
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM nodes WHERE is_dir=0 AND (version_id IS NULL"
            " OR NOT EXISTS (SELECT 1 FROM versions v WHERE v.id = nodes.version_id))"
        ).fetchall()
    ]


# -- stats ---------------------------------------------------------------------------


def file_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM nodes WHERE is_dir=0").fetchone()[0])


def live_bytes(conn: sqlite3.Connection) -> int:
    """Logical bytes of live files: every copy counted."""
    return int(conn.execute("SELECT sum(v.size) FROM nodes n JOIN versions v ON v.id = n.version_id").fetchone()[0] or 0)


def totals(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(live files, live folders but roots, logical bytes of live files: every copy counted)."""
    folders = int(conn.execute("SELECT count(*) FROM nodes WHERE is_dir=1 AND parent_id IS NOT NULL").fetchone()[0])
    return file_count(conn), folders, live_bytes(conn)


# -- recover's summary -----------------------------------------------------------------


def folder_count(conn: sqlite3.Connection) -> int:
    """Live folders but roots, outside the trash and staging (§19)."""
    return int(conn.execute("SELECT count(*) FROM nodes WHERE is_dir=1 AND parent_id IS NOT NULL AND parent_id < ?",
                            (TRASH,)).fetchone()[0])


def history_state_count(conn: sqlite3.Connection) -> int:
    """Past states of nodes kept in history (§15)."""
    return int(conn.execute("SELECT count(*) FROM node_history").fetchone()[0])


# -- the server's start-up check (catalog_health.py, DESIGN.md §20.6) -------------------

#: (id, parent_id, version_id, name_enc): what a node's name is bound to (§7.2)
NameRow = tuple[int, int | None, int | None, bytes]


def root_name_row(conn: sqlite3.Connection, root_id: int) -> NameRow | None:
    """A user's root folder as a name row; None if no node has that ID or it is not a
    root folder (it has a parent or is a file)."""
    row = conn.execute(
        "SELECT id, parent_id, version_id, name_enc, is_dir FROM nodes WHERE id=?", (root_id,)
    ).fetchone()
    if row is None or row[1] is not None or not row[4]:
        return None
    return row[0], row[1], row[2], row[3]


def newest_name_rows(conn: sqlite3.Connection, limit: int) -> list[NameRow]:
    """The name rows of the ``limit`` most recently created nodes (highest IDs first)."""
    return [
        (r[0], r[1], r[2], r[3])
        for r in conn.execute(
            "SELECT id, parent_id, version_id, name_enc FROM nodes ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
    ]
