"""Large changes to the tree in bounded transactions (DESIGN.md §19).

The catalog has one writer (group commit, :meth:`davbackup.catalog.Catalog.write`):
a COPY or DELETE of a tree of 100,000 nodes done in one transaction holds it for
seconds, and every other user's write waits that long. So a change of more than
:data:`SMALL` nodes is split into transactions of at most :data:`BATCH` rows, in a way
no client can tell from one transaction:

* **Detached trees.** A node whose ``parent_id`` is at least :data:`TRASH` is the top
  of a *detached* tree: no path reaches it, neither in the live tree nor at any point
  in time (resolution walks from a user's root, DESIGN.md §15.2). ``parent_id -
  TRASH`` is the owner's root node ID; from :data:`STAGING` on it is ``parent_id -
  STAGING``. Names of detached nodes are sealed with that parent like any other.
* **COPY** reads the source in one read snapshot and inserts the copy in batches
  under a staging top (``parent_id = STAGING + owner``), then links it in one short
  transaction: the top gets its real parent, name and ``born``; the quota is charged
  there, exactly (the staged tree cannot change). Observers see nothing, then the
  whole copy of the source as of the snapshot. Afterwards ``born`` of the staged
  nodes is set to the moment of the link (in batches; until then only the names of
  versions in ``/.versions/`` would show the staging second).
* **DELETE** moves the top into the trash in one short transaction (its state goes
  to history like any change, its live row gets ``parent_id = TRASH + owner`` and
  ``born`` = the time of the delete). Its descendants stay live rows under it: at a
  past instant they are reached through the top's history state exactly as before,
  and after the delete nothing reaches them. Then the descendants are moved to
  history in batches, children before parents, each with ``died`` = the time of the
  delete — the same rows one big transaction would have written — and each batch
  takes its files' bytes off the owner's ``used`` in the same transaction, so the
  quota never counts a file twice or not at all. The DELETE is answered once its
  trash is empty.
* **Leftovers** of a crash are finished by the next process that takes the writer
  lock (and by ``gc``): trash is emptied as above (this is idempotent: a batch moves
  only rows still there), staging trees are dropped without history (they were never
  visible).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from davbackup import clock
from davbackup.catalog import Catalog
from davbackup.errors import Conflict, DavBackupError, InvalidPath, NotFound, PreconditionFailed
from davbackup.tree import (
    MAX_DEPTH,
    NODE_COLUMNS,
    NODE_FROM,
    STAGING,
    TRASH,
    Node,
    Tree,
    archive_nodes,
    archive_props,
    drop_version_if_unused,
    new_node_id,
)
from davbackup.users import charge

if TYPE_CHECKING:
    from davbackup.fs import Namespace

_log = logging.getLogger(__name__)
T = TypeVar("T")

#: rows (nodes) per transaction of a large change
BATCH = 1000
#: rows per transaction when only ``born`` is set (cheap rows: fewer, larger batches)
SETTLE_BATCH = 4000
#: subtrees up to this many nodes are changed in one transaction, as before
SMALL = 2000
#: after each batch, pause this share of the time it took (and at least MIN_PAUSE s)
PAUSE_SHARE = 1.0
MIN_PAUSE = 0.002


def trash_of(owner: int) -> int:
    return TRASH + owner


def staging_of(owner: int) -> int:
    return STAGING + owner


def owner_of(detached_parent: int) -> int:
    return detached_parent - (STAGING if detached_parent >= STAGING else TRASH)


def detached_name(node_id: int) -> str:
    """The name of a detached top: its own ID, so that two of one owner never share a
    name (the real name is in its history state, or given when a copy is linked)."""
    return str(node_id)


def is_large(conn: sqlite3.Connection, node_id: int) -> bool:
    """Whether the subtree of ``node_id`` has more than :data:`SMALL` nodes (counted
    no further than that)."""
    row = conn.execute(  # the outer LIMIT stops the recursion (SQLite and PostgreSQL alike)
        "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id)"
        " SELECT count(*) FROM (SELECT id FROM sub LIMIT ?) AS first",
        (node_id, SMALL + 1),
    ).fetchone()
    return int(row[0]) > SMALL


def subtree_bytes(conn: sqlite3.Connection, node_id: int) -> int:
    """Logical bytes of the files in a subtree (read outside the writer)."""
    row = conn.execute(
        "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id)"
        " SELECT coalesce(sum(v.size), 0) FROM sub JOIN nodes n ON n.id = sub.id JOIN versions v ON v.id = n.version_id",
        (node_id,),
    ).fetchone()
    return int(row[0])


def _descendants_bottom_up(conn: sqlite3.Connection, top: int) -> list[int]:
    """The IDs below ``top``, every child before its parent."""
    order: list[int] = []
    level = [top]
    while level:
        below: list[int] = []
        for start in range(0, len(level), 500):
            part = level[start : start + 500]
            marks = ",".join("?" * len(part))
            below += [r[0] for r in conn.execute(f"SELECT id FROM nodes WHERE parent_id IN ({marks})", part)]
        order += below
        level = below
    order.reverse()
    return order


class _Pacer:
    """Spaces the batches of one large change: after each, a pause as long as the work
    since the previous pause (at least :data:`MIN_PAUSE`). Writes that queued
    meanwhile commit in their own transaction before the next batch joins the queue,
    and the request threads get the interpreter (reading, decrypting and sealing the
    batches is Python work that holds the GIL)."""

    def __init__(self) -> None:
        self._resumed = time.monotonic()

    def write(self, catalog: Catalog, fn: Callable[[sqlite3.Connection], T]) -> T:
        result = catalog.write(fn)
        time.sleep(max(MIN_PAUSE, PAUSE_SHARE * (time.monotonic() - self._resumed)))
        self._resumed = time.monotonic()
        return result


def _batches(ids: list[int], size: int = 0) -> Iterator[list[int]]:
    size = size or BATCH
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


# -- the trash: deleting a large tree ------------------------------------------------------


def detach(conn: sqlite3.Connection, tree: Tree, owner: int, node: Node, now: float) -> None:
    """Inside the deleting transaction: the top's state goes to history and its live row
    into the owner's trash; :func:`empty_trash` moves the rest afterwards."""
    archive_nodes(conn, owner, [node.id], now)
    archive_props(conn, owner, [node.id], None, now)
    conn.execute("DELETE FROM props WHERE node_id=?", (node.id,))
    parent, name = trash_of(owner), detached_name(node.id)
    conn.execute(
        "UPDATE nodes SET parent_id=?, name_hash=?, name_enc=?, born=? WHERE id=?",
        (parent, tree.name_hash(parent, name), tree.seal_name(name, node.id, parent, node.version_id), now, node.id),
    )


def empty_trash(catalog: Catalog, top: int) -> int:
    """Move a detached tree's nodes to history in batches (children first), taking their
    bytes off the owner's quota in the same transactions; returns the bytes released."""
    pacer = _Pacer()
    ids = _descendants_bottom_up(catalog.reader(), top) + [top]
    released = 0
    for part in _batches(ids):
        released += pacer.write(catalog, lambda conn, p=part: _reclaim(conn, top, p))  # type: ignore[misc]
    return released


def _reclaim(conn: sqlite3.Connection, top: int, part: list[int]) -> int:
    row = conn.execute("SELECT parent_id, born FROM nodes WHERE id=?", (top,)).fetchone()
    if row is None or not TRASH <= row[0] < STAGING:
        return 0  # emptied meanwhile (by gc, or the next start after a crash)
    owner, died = owner_of(row[0]), float(row[1])
    marks = ",".join("?" * len(part))
    versions: set[int] = set()
    size = 0
    for vid, vsize in conn.execute(
        f"SELECT n.version_id, v.size FROM nodes n JOIN versions v ON v.id = n.version_id WHERE n.id IN ({marks})",
        part,
    ):
        versions.add(vid)
        size += vsize
    below = [i for i in part if i != top]  # the top's own state went to history when it was detached
    if below:
        archive_nodes(conn, owner, below, died)
        archive_props(conn, owner, below, None, died)
    conn.execute(f"DELETE FROM props WHERE node_id IN ({marks})", part)
    conn.execute(f"DELETE FROM nodes WHERE id IN ({marks})", part)
    if size:
        charge(conn, owner, -size)
    now = clock.now()
    for vid in versions:
        drop_version_if_unused(conn, vid, now)
    return size


# -- staging: copying a large tree ----------------------------------------------------------


@dataclass
class StagedCopy:
    """A copy built under a staging top, not yet linked."""

    top: int
    owner: int
    node_ids: list[int]
    bytes: int


class CopyStager:
    """Builds the copy of ``source`` (as read in ``snap``, one read transaction) under a
    staging top of ``owner``, in batches of :data:`BATCH` nodes. ``room`` bounds the
    levels below the source (the depth limit); ``None`` checks nothing."""

    def __init__(self, catalog: Catalog, tree: Tree, owner: int) -> None:
        self.catalog = catalog
        self.tree = tree
        self.owner = owner
        #: what is staged so far (for :func:`discard` if staging or linking fails)
        self.staged: StagedCopy | None = None
        self._pacer = _Pacer()

    def stage(self, snap: sqlite3.Connection, source: Node, room: int | None) -> StagedCopy:
        tree = self.tree
        parent = staging_of(self.owner)
        props = self._props(snap, [source.id])

        def make_top(conn: sqlite3.Connection) -> int:
            now = clock.now()
            nid = tree.insert(conn, parent, detached_name(new_node_id(conn)), source.is_dir, source.version_id, now)
            self._insert_props(conn, props, {source.id: nid}, now)
            return nid

        top = self.catalog.write(make_top)
        staged = self.staged = StagedCopy(top, self.owner, [top], 0 if source.is_dir else source.size)
        if source.is_dir:
            self._stage_below(snap, source.id, top, room, staged)
        return staged

    def _stage_below(self, snap: sqlite3.Connection, source: int, top: int, room: int | None,
                     staged: StagedCopy) -> None:
        level: list[tuple[int, int]] = [(source, top)]  # (source folder, its copy)
        depth = 0
        pending: list[tuple[Node, int]] = []  # (source node, parent of its copy)
        while level:
            depth += 1
            below: list[tuple[int, int]] = []
            for old_dir, new_dir in level:
                # fetchall: an unfinished statement would keep this thread's reader on
                # the snapshot after an error, long after the snapshot has ended
                rows = snap.execute(f"SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.parent_id=?", (old_dir,)).fetchall()
                for row in rows:
                    if room is not None and depth > room:
                        raise InvalidPath(f"the copy would nest deeper than the {room} levels left")
                    pending.append((self.tree._node(row), new_dir))
                    if len(pending) >= BATCH:
                        below += self._flush(snap, pending, staged)
                        pending = []
            if pending:
                below += self._flush(snap, pending, staged)
                pending = []
            level = below

    def _flush(self, snap: sqlite3.Connection, pending: list[tuple[Node, int]],
               staged: StagedCopy) -> list[tuple[int, int]]:
        props = self._props(snap, [n.id for n, _ in pending])
        tree = self.tree

        def txn(conn: sqlite3.Connection) -> list[int]:
            now = clock.now()
            base = new_node_id(conn)
            rows = []
            for i, (node, parent) in enumerate(pending):
                nid = base + i
                rows.append((nid, parent, tree.name_hash(parent, node.name),
                             tree.seal_name(node.name, nid, parent, node.version_id),
                             int(node.is_dir), node.version_id, now, now, now))
            conn.executemany(
                "INSERT INTO nodes(id, parent_id, name_hash, name_enc, is_dir, version_id, created, modified, born)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._insert_props(conn, props, {node.id: base + i for i, (node, _) in enumerate(pending)}, now)
            return [base + i for i in range(len(pending))]

        new_ids = self._pacer.write(self.catalog, txn)
        staged.node_ids += new_ids
        staged.bytes += sum(node.size for node, _ in pending if not node.is_dir)
        return [(node.id, nid) for (node, _), nid in zip(pending, new_ids, strict=True) if node.is_dir]

    @staticmethod
    def _props(snap: sqlite3.Connection, ids: list[int]) -> list[tuple[int, str, bytes]]:
        marks = ",".join("?" * len(ids))
        return snap.execute(f"SELECT node_id, name, value_enc FROM props WHERE node_id IN ({marks})", ids).fetchall()

    def _insert_props(self, conn: sqlite3.Connection, props: list[tuple[int, str, bytes]],
                      new_ids: dict[int, int], now: float) -> None:
        conn.executemany(
            "INSERT INTO props(node_id, name, value_enc, born) VALUES (?, ?, ?, ?)",
            [(new_ids[old], name, self.tree.reseal_prop(blob, old, new_ids[old], name), now)
             for old, name, blob in props],
        )


def link(conn: sqlite3.Connection, tree: Tree, staged: StagedCopy, parent_id: int, name: str, now: float) -> None:
    """Inside the linking transaction: the staged top becomes ``parent_id/name``."""
    row = conn.execute("SELECT parent_id, is_dir, version_id FROM nodes WHERE id=?", (staged.top,)).fetchone()
    if row is None or row[0] != staging_of(staged.owner):
        raise Conflict("the staged copy was removed before it could be linked (a gc after a long pause?)")
    conn.execute(
        "UPDATE nodes SET parent_id=?, name_hash=?, name_enc=?, born=?, created=?, modified=? WHERE id=?",
        (parent_id, tree.name_hash(parent_id, name), tree.seal_name(name, staged.top, parent_id, row[2]),
         now, now, now, staged.top),
    )


def settle_born(catalog: Catalog, staged: StagedCopy, linked: float) -> None:
    """After the link: the staged nodes' states begin at the link (they could not be
    seen before it), so version names in ``/.versions/`` name the right second."""
    pacer = _Pacer()
    for part in _batches(staged.node_ids[1:], SETTLE_BATCH):
        marks = ",".join("?" * len(part))

        def txn(conn: sqlite3.Connection, p: list[int] = part, m: str = marks) -> None:
            conn.execute(f"UPDATE nodes SET born=? WHERE id IN ({m}) AND born < ?", [linked, *p, linked])
            conn.execute(f"UPDATE props SET born=? WHERE node_id IN ({m}) AND born < ?", [linked, *p, linked])

        pacer.write(catalog, txn)


def discard(catalog: Catalog, top: int, node_ids: list[int] | None = None) -> None:
    """Drop a staging tree (never visible: no history) in batches, children first.
    ``node_ids``: the staged IDs, parents first (read from the catalog if not given)."""
    if node_ids is None:
        ids = _descendants_bottom_up(catalog.reader(), top) + [top]
    else:
        ids = list(reversed(node_ids))  # staged top-down: reversed, children come first
    pacer = _Pacer()
    for part in _batches(ids):
        pacer.write(catalog, lambda conn, p=part: _drop(conn, top, p))  # type: ignore[misc]


def _drop(conn: sqlite3.Connection, top: int, part: list[int]) -> None:
    row = conn.execute("SELECT parent_id FROM nodes WHERE id=?", (top,)).fetchone()
    if row is None or row[0] < STAGING:
        return  # linked meanwhile, or already dropped
    marks = ",".join("?" * len(part))
    versions = {r[0] for r in conn.execute(
        f"SELECT version_id FROM nodes WHERE id IN ({marks}) AND version_id IS NOT NULL", part)}
    conn.execute(f"DELETE FROM props WHERE node_id IN ({marks})", part)
    conn.execute(f"DELETE FROM nodes WHERE id IN ({marks})", part)
    now = clock.now()
    for vid in versions:
        drop_version_if_unused(conn, vid, now)


def copy_large(ns: "Namespace", src: str, dst: str, overwrite: bool) -> bool:
    """``Namespace.copy`` of a large tree: staged from one read snapshot, linked in one
    short transaction, then the staged states' ``born`` settled and any replaced
    destination's trash emptied."""
    tree, catalog = ns.store.tree, ns.store.catalog
    parts: tuple[list[str], list[str]] = ns._check_transfer(src, dst, "copy")
    sparts, dparts = parts
    label = f"copy {src} -> {dst}"
    stager = CopyStager(catalog, tree, ns.root_id)
    try:
        with catalog.snapshot() as snap:
            node = tree.resolve(snap, ns.root_id, sparts)
            if node is None:
                raise NotFound(f"copy {src}: no such file or folder")
            parent = ns._parent(snap, dparts, dst)  # early answers; the link checks again
            if not overwrite and tree.child(snap, parent.id, dparts[-1]) is not None:
                raise PreconditionFailed(f"{label}: destination exists")
            room = MAX_DEPTH - len(dparts) if len(dparts) > len(sparts) else None
            staged = stager.stage(snap, node, room)
        large = ns._large(dparts) if overwrite else None

        def txn(conn: sqlite3.Connection) -> tuple[bool, int | None, float]:
            now = clock.now()
            parent = ns._parent(conn, dparts, dst)
            existed, trash, removed, pending = ns._clear(conn, parent, dparts, overwrite, large, now, label)
            link(conn, tree, staged, parent.id, dparts[-1], now)
            tree.touch(conn, parent.id, now)
            ns._changed(conn, now, staged.bytes - removed, pending)
            return not existed, trash, now

        created, trash, linked = catalog.write(txn)
    except BaseException:
        if stager.staged is not None:
            discard(catalog, stager.staged.top, stager.staged.node_ids)
        raise
    settle_born(catalog, staged, linked)
    if trash is not None:
        empty_trash(catalog, trash)
    return created


# -- leftovers ------------------------------------------------------------------------------


@dataclass
class Leftovers:
    trash_emptied: int = 0
    staging_dropped: int = 0


def finish_leftovers(catalog: Catalog, *, staged_before: float | None = None,
                     best_effort: bool = False) -> Leftovers:
    """Empty every trash and drop every staging tree started before ``staged_before``
    (None: all of them; a running server's copy may be building one). With
    ``best_effort``, a failure (a full disk) is logged and what is left waits for the
    next start or gc: it is invisible, and a server must start and gc must go on
    reclaiming space on a full disk."""
    found = Leftovers()
    rows = catalog.reader().execute("SELECT id, parent_id, born FROM nodes WHERE parent_id >= ?", (TRASH,)).fetchall()
    for top, parent, born in rows:
        try:
            if parent >= STAGING:
                if staged_before is not None and born >= staged_before:
                    continue
                discard(catalog, top)
                found.staging_dropped += 1
            else:
                empty_trash(catalog, top)
                found.trash_emptied += 1
        except DavBackupError as exc:
            if not best_effort:
                raise
            _log.warning("an interrupted large COPY or DELETE could not be finished now (%s); "
                         "the next start or gc finishes it", exc)
            break
    return found
