"""A folder's children as plain tuples: the listing PROPFIND answers from (DESIGN.md §7.2).

:meth:`davbackup.fs.Namespace.list` gives each child as a frozen ``Entry`` made from a
frozen ``Node``; for a folder of thousands of children, building those two objects per
child cost more than the query and the names' decryption together. :func:`children`
reads the same rows in one query and returns one tuple per child (the fields of
``Entry``, in the order of the constants below), each name opened in one loop with the
same associated data as :meth:`Tree.open_name`; a name that does not verify goes to
``Tree.open_name`` itself, which accepts a legacy name where that is allowed and
raises its ``IntegrityError`` otherwise. Directories get the size, ETag and checksums
``Tree`` gives them (0, ``d<id>-<modified ms>``, none).
"""

from __future__ import annotations

import sqlite3
import struct
from operator import itemgetter

from cryptography.exceptions import InvalidTag

from davbackup import crypto, properties
from davbackup.tree import NAME_AD, NODE_FROM, Tree

#: positions in a child tuple
NAME, IS_DIR, SIZE, ETAG, CREATED, MODIFIED, NODE_ID, CHECKSUMS, VERSION_ID = range(9)
Child = tuple[str, bool, int, str, float, float, int, "str | None", "int | None"]

_COLUMNS = "n.id, n.name_enc, n.is_dir, n.version_id, n.created, n.modified, v.size, v.etag, v.checksums"
_IDS = struct.Struct(">QQQ")  # node, parent, version: the tail of a name's associated data
_BY_NAME = itemgetter(NAME)


def children(conn: sqlite3.Connection, tree: Tree, parent_id: int) -> list[Child]:
    """The children of folder ``parent_id``, sorted by name (as ``Tree.children``)."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM {NODE_FROM} WHERE n.parent_id=?", (parent_id,)).fetchall()
    decrypt = crypto.small_opener(tree._name_key)  # noqa: SLF001 - the tree's own key, read here only
    ids, cut = _IDS.pack, crypto.NONCE_SIZE
    out: list[Child] = []
    append = out.append
    for nid, blob, is_dir, version_id, created, modified, size, etag, sums in rows:
        try:
            name = decrypt(blob[:cut], blob[cut:], NAME_AD + ids(nid, parent_id, version_id or 0)).decode("utf-8")
        except InvalidTag:
            name = tree.open_name(blob, nid, parent_id, version_id)
        if is_dir:
            append((name, True, 0, f"d{nid}-{int(modified * 1000)}", created, modified, nid, None, version_id))
        else:
            checksums = None if sums is None else tree.open_checksums(sums, nid)
            append((name, False, size or 0, etag or "", created, modified, nid, checksums, version_id))
    out.sort(key=_BY_NAME)
    return out


def node_listing(conn: sqlite3.Connection, tree: Tree, node_id: int, path: str, with_children: bool,
                 ) -> tuple[dict[str, str], list[Child], dict[int, dict[str, str]]]:
    """A node's dead properties, and with ``with_children`` (a folder) its :func:`children`
    and their dead properties by node ID (none asked for an empty folder)."""
    own = properties.read(conn, tree, node_id, path)
    if not with_children:
        return own, [], {}
    found = children(conn, tree, node_id)
    return own, found, properties.read_children_by_node(conn, tree, node_id, path) if found else {}
