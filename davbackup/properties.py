"""Dead properties of live nodes (WebDAV PROPPATCH; DESIGN.md §7.4, §15).

A property's value is stored sealed (davbackup/tree.py: ``Tree.seal_prop``, bound to
the node and the property name). Setting or removing one keeps the state it replaces
in ``props_history`` (``archive_props``) within the same transaction. The tree moves
properties along with their nodes (delete, copy, restore: davbackup/tree.py,
tree_bulk.py, history.py); what a user's file system does with them is here.
"""

from __future__ import annotations

import sqlite3

from davbackup.tree import Tree, archive_props


def read(conn: sqlite3.Connection, tree: Tree, node_id: int, path: str) -> dict[str, str]:
    """Every dead property of a node, opened."""
    result = {}
    for name, blob in conn.execute("SELECT name, value_enc FROM props WHERE node_id=?", (node_id,)):
        result[name] = tree.open_prop(blob, node_id, name, path)
    return result


def read_children(conn: sqlite3.Connection, tree: Tree, parent_id: int, path: str) -> dict[str, dict[str, str]]:
    """Dead properties of every child of a folder, by child name, in one query."""
    rows = conn.execute(
        "SELECT n.id, n.parent_id, n.version_id, n.name_enc, p.name, p.value_enc"
        " FROM nodes n JOIN props p ON p.node_id = n.id"
        " WHERE n.parent_id=?",
        (parent_id,),
    ).fetchall()
    result: dict[str, dict[str, str]] = {}
    for node_id, node_parent, version_id, name_enc, prop, blob in rows:
        child = tree.open_name(name_enc, node_id, node_parent, version_id)
        result.setdefault(child, {})[prop] = tree.open_prop(blob, node_id, prop, f"{path}/{child}")
    return result


def read_children_by_node(conn: sqlite3.Connection, tree: Tree, parent_id: int, path: str) -> dict[int, dict[str, str]]:
    """Dead properties of every child of a folder, by child node ID, in one query
    (a listing already knows its entries' node IDs: no name is decrypted again)."""
    rows = conn.execute(
        "SELECT p.node_id, p.name, p.value_enc FROM nodes n JOIN props p ON p.node_id = n.id"
        " WHERE n.parent_id=?",
        (parent_id,),
    ).fetchall()
    result: dict[int, dict[str, str]] = {}
    for node_id, prop, blob in rows:
        result.setdefault(node_id, {})[prop] = tree.open_prop(blob, node_id, prop, f"{path} (node {node_id})")
    return result


def put(conn: sqlite3.Connection, tree: Tree, owner: int, node_id: int, name: str, value: str, now: float) -> None:
    """Inside a transaction: set a property (its previous value goes to history)."""
    blob = tree.seal_prop(node_id, name, value)
    archive_props(conn, owner, [node_id], name, now)
    conn.execute(
        "INSERT OR REPLACE INTO props(node_id, name, value_enc, born) VALUES (?, ?, ?, ?)",
        (node_id, name, blob, now),
    )


def remove(conn: sqlite3.Connection, owner: int, node_id: int, name: str, now: float) -> None:
    """Inside a transaction: remove a property (its value goes to history)."""
    archive_props(conn, owner, [node_id], name, now)
    conn.execute("DELETE FROM props WHERE node_id=? AND name=?", (node_id, name))
