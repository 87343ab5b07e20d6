"""History of one user's tree: points in time, versions of a file, restore (DESIGN.md §15).

Every change keeps the state it replaces (see :mod:`davbackup.tree`), so the tree as it
was at any instant can be listed and read like the live one. A *moment* is a second
(UTC) in which the user's tree changed; the state "at" a moment is the state after
everything committed up to the end of that second. Moments are named in basic ISO 8601
without colons (``2026-12-03T073000Z``), safe on every file system.

Nothing here changes history: :class:`PointInTime` and :meth:`History.versions` only
read, and :meth:`History.restore` writes the live tree (the state it replaces goes to
history like any other change). Only retention (:mod:`davbackup.retention`), run by the
administrator, removes history.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from davbackup import clock
from davbackup.entry import Entry, entry_of
from davbackup.errors import Conflict, InvalidPath, NotFound, PreconditionFailed
from davbackup.reader import VersionReader
from davbackup.tree import Node, archive_props, join_path, split_path

if TYPE_CHECKING:
    from davbackup.catalog import Catalog
    from davbackup.fs import Namespace

MOMENT_FORMAT = "%Y-%m-%dT%H%M%SZ"
_MOMENT = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2})(\d{2})(\d{2})Z")


def format_moment(second: int) -> str:
    return datetime.fromtimestamp(second, timezone.utc).strftime(MOMENT_FORMAT)


def parse_moment(text: str) -> int:
    """``2026-12-03T073000Z`` -> seconds since the epoch; :class:`InvalidPath` if malformed."""
    match = _MOMENT.fullmatch(text)
    if match is None:
        raise InvalidPath(f"{text!r}: not a point in time (use YYYY-MM-DDTHHMMSSZ, UTC)")
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError as exc:
        raise InvalidPath(f"{text!r}: not a valid date and time ({exc})") from exc
    return int(moment.timestamp())


def split_version_name(name: str) -> tuple[int, str]:
    """``2026-12-03T073000Z.pdf`` -> (second, ``.pdf``)."""
    stamp, ext = name[:18], name[18:]
    if ext and not ext.startswith("."):
        raise InvalidPath(f"{name!r}: not a version name")
    return parse_moment(stamp), ext


def extension(name: str) -> str:
    """The file's extension with its dot (``.tar.gz`` counts as ``.gz``), or ''."""
    dot = name.rfind(".")
    return name[dot:] if dot > 0 else ""


@dataclass(frozen=True)
class FileVersion:
    """One retained version of a file: the moment it became current, and its state."""

    second: int
    name: str  # moment + extension
    entry: "Entry"
    version_id: int  # the catalog version (chunk list) it reads
    node_id: int  # the file's node, whose properties at ``second`` go with it


class PointInTime:
    """The user's tree at the end of one second: read-only, like ``Namespace``'s reads."""

    def __init__(self, history: "History", second: int, instant: float) -> None:
        self._h = history
        self.second = second
        self._t = instant

    @property
    def name(self) -> str:
        return format_moment(self.second)

    def _resolve(self, conn: sqlite3.Connection, parts: list[str]) -> Node | None:
        return self._h.tree.resolve_at(conn, self._h.root_id, parts, self._t)

    def lookup(self, path: str) -> "Entry | None":
        parts = split_path(path)
        node = self._resolve(self._h.catalog.reader(), parts)
        return self._h.entry(parts, node) if node else None

    def stat(self, path: str) -> "Entry":
        entry = self.lookup(path)
        if entry is None:
            raise NotFound(f"{path}: did not exist at {self.name}")
        return entry

    def list(self, path: str) -> "list[Entry]":
        parts = split_path(path)
        conn = self._h.catalog.reader()
        node = self._resolve(conn, parts)
        if node is None:
            raise NotFound(f"{path}: no such folder at {self.name}")
        if not node.is_dir:
            raise Conflict(f"{path}: not a folder")
        return [self._h.entry(parts + [c.name], c) for c in self._h.tree.children_at(conn, node.id, self._t)]

    def open_read(self, path: str) -> VersionReader:
        parts = split_path(path)
        node = self._resolve(self._h.catalog.reader(), parts)
        if node is None:
            raise NotFound(f"{path}: did not exist at {self.name}")
        return self._h.reader(node, join_path(parts))

    def get_props(self, path: str) -> dict[str, str]:
        parts = split_path(path)
        conn = self._h.catalog.reader()
        node = self._resolve(conn, parts)
        if node is None:
            raise NotFound(f"{path}: did not exist at {self.name}")
        return self._h.props_at(conn, node.id, self._t, path)

    def child_props(self, path: str) -> dict[str, dict[str, str]]:
        """Dead properties of every member of a folder then, by member name: the folder
        is resolved once and the properties read with one query (a PROPFIND listing)."""
        parts = split_path(path)
        conn = self._h.catalog.reader()
        node = self._resolve(conn, parts)
        if node is None or not node.is_dir:
            return {}
        members = {c.id: c.name for c in self._h.tree.children_at(conn, node.id, self._t)}
        found: dict[str, dict[str, str]] = {name: {} for name in members.values()}
        ids = list(members)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = conn.execute(
                f"SELECT node_id, name, value_enc FROM props WHERE node_id IN ({marks}) AND born < ?"
                f" UNION ALL SELECT node_id, name, value_enc FROM props_history WHERE node_id IN ({marks})"
                " AND born < ? AND died >= ?",
                (*part, self._t, *part, self._t, self._t),
            ).fetchall()
            for nid, name, blob in rows:
                child = members[nid]
                found[child][name] = self._h.tree.open_prop(blob, nid, name, f"{path.rstrip('/')}/{child}")
        return found


class History:
    """History of one user's namespace (built by :class:`davbackup.fs.Namespace`)."""

    def __init__(self, ns: "Namespace") -> None:
        self.ns = ns
        self.catalog = ns.store.catalog
        self.tree = ns.store.tree
        self.root_id = ns.root_id

    # -- shared helpers --------------------------------------------------------------

    def entry(self, parts: list[str], node: Node) -> Entry:
        return entry_of(parts, node)

    def reader(self, node: Node, path: str) -> VersionReader:
        if node.is_dir or node.version_id is None:
            raise Conflict(f"{path}: is a folder")
        return self.ns.version_reader(node.version_id, node.size, node.etag, path)

    def props_at(self, conn: sqlite3.Connection, node_id: int, t: float, path: str) -> dict[str, str]:
        return {
            name: self.tree.open_prop(blob, node_id, name, path)
            for name, blob in self._sealed_props_at(conn, node_id, t).items()
        }

    # -- points in time --------------------------------------------------------------

    def moments(self) -> list[int]:
        """The retained points in time (seconds with changes), oldest first."""
        rows = self.catalog.reader().execute(
            "SELECT second FROM moments WHERE owner=? ORDER BY second", (self.root_id,)
        )
        return [r[0] for r in rows]

    def at(self, second: int) -> PointInTime:
        """The tree at the newest retained moment at or before ``second``."""
        row = self.catalog.reader().execute(
            "SELECT max(second) FROM moments WHERE owner=? AND second <= ?", (self.root_id, second)
        ).fetchone()
        effective = row[0] if row and row[0] is not None else second
        return PointInTime(self, second, effective + 1.0)

    # -- versions of one file -----------------------------------------------------------

    def versions(self, path: str) -> list[FileVersion]:
        """Every retained version of the file that has (or last had) this path."""
        parts = split_path(path)
        if not parts:
            raise Conflict("/: the root is a folder")
        conn = self.catalog.reader()
        node_id = self.tree.last_node_at_path(conn, self.root_id, parts)
        if node_id is None:
            raise NotFound(f"{path}: no such file, now or in history")
        states = self.tree.states(conn, node_id)
        if not states or states[-1][0].is_dir:
            raise Conflict(f"{path}: is a folder")
        ext = extension(parts[-1])
        by_second: dict[int, FileVersion] = {}
        previous: int | None = None
        for node, born in states:
            if node.is_dir or node.version_id is None or node.version_id == previous:
                continue  # a rename keeps the version: not a new one
            previous = node.version_id
            second = int(born)
            name = format_moment(second) + ext
            by_second[second] = FileVersion(second, name, self.entry(parts[:-1] + [name], node), node.version_id,
                                            node_id)
        return [by_second[s] for s in sorted(by_second)]

    def version(self, path: str, name: str) -> FileVersion:
        for v in self.versions(path):
            if v.name == name:
                return v
        raise NotFound(f"{path}: no version {name}")

    def open_version(self, path: str, name: str) -> VersionReader:
        return self.read_version(self.version(path, name), path)

    def read_version(self, v: FileVersion, path: str) -> VersionReader:
        """A reader of a version found by :meth:`versions` (no second lookup)."""
        return self.ns.version_reader(v.version_id, v.entry.size, v.entry.etag, f"{path}@{v.name}")

    def version_props(self, path: str, name: str) -> dict[str, str]:
        return self.props_of(self.version(path, name), path)

    def props_of(self, v: FileVersion, path: str) -> dict[str, str]:
        """The dead properties the file had when ``v`` became current."""
        return self.props_at(self.catalog.reader(), v.node_id, v.second + 1.0, path)

    # -- restore ---------------------------------------------------------------------

    def restore(self, second: int, src: str, dst: str, overwrite: bool) -> bool:
        """Copy ``src`` as it was at ``second`` onto the live ``dst`` (a file or a whole
        tree), in one transaction, without copying data. Returns True if ``dst`` was
        created. The replaced live state stays in history."""
        point = self.at(second)
        return self._restore(point._t, split_path(src), dst, overwrite, point.name)

    def restore_version(self, path: str, name: str, dst: str, overwrite: bool) -> bool:
        v = self.version(path, name)
        return self._restore_node(v.node_id, v.second + 1.0, dst, overwrite, f"{path}@{name}")

    def _restore(self, t: float, sparts: list[str], dst: str, overwrite: bool, label: str) -> bool:
        node = self.tree.resolve_at(self.catalog.reader(), self.root_id, sparts, t)
        if node is None:
            raise NotFound(f"{join_path(sparts)}: did not exist at {label}")
        return self._restore_node(node.id, t, dst, overwrite, label)

    def _restore_node(self, node_id: int, t: float, dst: str, overwrite: bool, label: str) -> bool:
        ns = self.ns
        dparts = split_path(dst)
        ns.check_writable(dst)

        def txn(conn: sqlite3.Connection) -> bool:
            now = clock.now()
            src = self._state_at(conn, node_id, t)
            if src is None:
                raise NotFound(f"{label}: gone from history")
            if not dparts:
                existing: Node | None = self.tree.get(conn, self.root_id)
                parent_id = None
            else:
                parent = ns._parent(conn, dparts, dst)
                parent_id = parent.id
                existing = self.tree.child(conn, parent.id, dparts[-1])
            if existing is not None and not overwrite:
                raise PreconditionFailed(f"restore {label} -> {dst}: destination exists")
            if not dparts and not src.is_dir:
                raise Conflict(f"restore {label} -> /: only a folder can replace the root")
            if existing is None:
                assert parent_id is not None
                added = self._copy_from(conn, src, parent_id, dparts[-1], t, now)
                self.tree.touch(conn, parent_id, now)
            else:
                added = self._restore_into(conn, src, existing, t, now)
            ns._changed(conn, now, added)
            return existing is None

        return self.catalog.write(txn)

    def _state_at(self, conn: sqlite3.Connection, node_id: int, t: float) -> Node | None:
        """The node's state current at ``t`` (the newest state that began before it)."""
        for node, born in reversed(self.tree.states(conn, node_id)):
            if born < t:
                return node
        return None

    def _set_props(self, conn: sqlite3.Connection, node_id: int, src_id: int, t: float, now: float) -> None:
        """Give ``node_id`` the properties ``src_id`` had at ``t`` (sealed again for it)."""
        old = self._sealed_props_at(conn, src_id, t)
        if src_id == node_id and old == self._sealed_props_at(conn, node_id, now + 1):
            return
        archive_props(conn, self.root_id, [node_id], None, now)
        conn.execute("DELETE FROM props WHERE node_id=?", (node_id,))
        conn.executemany(
            "INSERT INTO props(node_id, name, value_enc, born) VALUES (?, ?, ?, ?)",
            [(node_id, name, self.tree.reseal_prop(blob, src_id, node_id, name), now) for name, blob in old.items()],
        )

    def _sealed_props_at(self, conn: sqlite3.Connection, node_id: int, t: float) -> dict[str, bytes]:
        rows = conn.execute(
            "SELECT name, value_enc FROM props WHERE node_id=? AND born < ?"
            " UNION ALL SELECT name, value_enc FROM props_history WHERE node_id=? AND born < ? AND died >= ?",
            (node_id, t, node_id, t, t),
        ).fetchall()
        return {name: blob for name, blob in rows}

    def _copy_from(self, conn: sqlite3.Connection, src: Node, parent_id: int, name: str, t: float, now: float) -> int:
        """Insert a copy of ``src`` (as at ``t``) as a new live node; returns bytes added."""
        new_id = self.tree.insert(conn, parent_id, name, src.is_dir, src.version_id, now)
        if not src.is_dir:
            conn.execute("UPDATE nodes SET modified=? WHERE id=?", (src.modified, new_id))
        self._set_props(conn, new_id, src.id, t, now)
        added = 0 if src.is_dir else src.size
        if src.is_dir:
            for child in self.tree.children_at(conn, src.id, t):
                added += self._copy_from(conn, child, new_id, child.name, t, now)
        return added

    def _restore_into(self, conn: sqlite3.Connection, src: Node, dest: Node, t: float, now: float) -> int:
        """Make the live ``dest`` look like ``src`` at ``t``; returns the change in bytes."""
        if src.is_dir != dest.is_dir:
            assert dest.parent_id is not None
            removed = self.tree.delete_subtree(conn, self.root_id, dest.id, now)
            return self._copy_from(conn, src, dest.parent_id, dest.name, t, now) - removed
        self._set_props(conn, dest.id, src.id, t, now)
        if not src.is_dir:
            if src.version_id == dest.version_id:
                return 0
            assert src.version_id is not None
            self.tree.set_version(conn, self.root_id, dest, src.version_id, now)
            conn.execute("UPDATE nodes SET modified=? WHERE id=?", (src.modified, dest.id))
            return src.size - dest.size
        delta = 0
        past = {c.name: c for c in self.tree.children_at(conn, src.id, t)}
        live = {c.name: c for c in self.tree.children(conn, dest.id)}
        for name, child in live.items():
            if name not in past:
                delta -= self.tree.delete_subtree(conn, self.root_id, child.id, now)
        for name, child in past.items():
            if name in live:
                delta += self._restore_into(conn, child, live[name], t, now)
            else:
                delta += self._copy_from(conn, child, dest.id, name, t, now)
        self.tree.touch(conn, dest.id, now)
        return delta


@dataclass(frozen=True)
class HistoryUsage:
    moments: int
    oldest: int | None
    newest: int | None
    versions: int  # file versions kept only by history
    bytes: int  # their logical size (what history holds on top of the live files)


def history_usage(catalog: "Catalog", owner: int) -> HistoryUsage:
    """What one user's history holds beyond the live tree."""
    conn = catalog.reader()
    count, oldest, newest = conn.execute(
        "SELECT count(*), min(second), max(second) FROM moments WHERE owner=?", (owner,)
    ).fetchone()
    versions, size = conn.execute(
        "SELECT count(*), coalesce(sum(v.size), 0) FROM versions v WHERE v.id IN"
        " (SELECT version_id FROM node_history WHERE owner=? AND version_id IS NOT NULL)"
        " AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.version_id = v.id)",
        (owner,),
    ).fetchone()
    return HistoryUsage(count, oldest, newest, versions, size)
