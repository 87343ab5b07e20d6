"""Row changes of the durable catalog tables, captured for the journal (DESIGN.md §20).

This is the one SQLite-specific part of the metadata journal: TEMP triggers on the
writer connection copy every inserted, updated or deleted row of a durable table into
the connection's TEMP table ``journal_capture``. TEMP objects live only in that one
connection (they are not stored in the catalog file, other connections and older
programs never see them), and the TEMP database takes part in the writer's
transaction and savepoints, so a job that is rolled back leaves no captured rows.
A PostgreSQL catalog would provide the same :class:`Capture` interface with its own
triggers (or logical decoding).

A change is ``put`` (the whole new row; replayed as ``INSERT OR REPLACE``) or
``del`` (the row's key; replayed as ``DELETE``). The key of a table is its primary
key, or the rowid for tables without one (``node_history``, ``props_history``), whose
rows then carry their rowid as the first value.

The server's catalog commits without syncing the WAL (the journal is its durable
log, DESIGN.md §20.7). A change the journal cannot bring back after a lost WAL tail
(an upload session, a lock, a pack row, a deleted or moved chunk row, the journal's
own bookkeeping) makes its trigger put the *sync mark* (row ``n = -1``) into the
capture table; a batch with the mark has its WAL synced after COMMIT. Inserting a
chunk row and updating its ``touched`` time, and moving a journal pack's
``last_seq``, are the exceptions: the start replays them (chunks of the packs left
open are indexed again) or does not need them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterator

#: Tables whose contents the journal keeps (everything needed to rebuild a catalog
#: except what the packs themselves tell: chunk index and packs). Locks, upload
#: sessions, damaged-chunk records and the journal's own bookkeeping are left out.
DURABLE_TABLES = (
    "meta",
    "users",
    "nodes",
    "versions",
    "segments",
    "segment_chunks",
    "version_segments",
    "props",
    "node_history",
    "props_history",
    "moments",
)

#: ``meta`` keys that belong to the catalog file itself, not to the repository's state.
META_FILTER = "key NOT LIKE 'journal%' AND key <> 'schema_version'"

MAX_COLUMNS = 16
ROWID = "rowid"


@dataclass(frozen=True)
class TableShape:
    name: str
    columns: tuple[str, ...]  # as a ``put`` carries them (rowid first for rowid tables)
    key: tuple[str, ...]

    @property
    def by_rowid(self) -> bool:
        return self.key == (ROWID,)


def table_shapes(conn: sqlite3.Connection, schema: str = "main") -> dict[str, TableShape]:
    """The columns and keys of the durable tables as they are in ``conn``."""
    shapes = {}
    for table in DURABLE_TABLES:
        info = conn.execute(f"PRAGMA {schema}.table_info({table})").fetchall()
        if not info:
            raise sqlite3.OperationalError(f"catalog has no table {table}")
        columns = tuple(row[1] for row in info)
        pk = tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        if not pk:
            shapes[table] = TableShape(table, (ROWID, *columns), (ROWID,))
        else:
            shapes[table] = TableShape(table, columns, pk)
        if len(shapes[table].columns) > MAX_COLUMNS:
            raise sqlite3.OperationalError(f"table {table} has too many columns for the journal")
    return shapes


def _slots(n: int) -> str:
    return ", ".join(f"c{i}" for i in range(n))


def _trigger_sql(shape: TableShape) -> list[str]:
    t = shape.name
    when = f" WHEN {META_FILTER.replace('key', 'NEW.key')}" if t == "meta" else ""
    when_old = f" WHEN {META_FILTER.replace('key', 'OLD.key')}" if t == "meta" else ""
    new_vals = ", ".join(f"NEW.{c}" for c in shape.columns)
    old_key = ", ".join(f"OLD.{c}" for c in shape.key)
    key_changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in shape.key)
    put = f"INSERT INTO journal_capture(tbl, op, {_slots(len(shape.columns))}) VALUES ('{t}', 'put', {new_vals});"
    delete = f"INSERT INTO journal_capture(tbl, op, {_slots(len(shape.key))}) VALUES ('{t}', 'del', {old_key});"
    moved = (
        f"INSERT INTO journal_capture(tbl, op, {_slots(len(shape.key))})"
        f" SELECT '{t}', 'del', {old_key} WHERE {key_changed};"
    )
    return [
        f"CREATE TEMP TRIGGER IF NOT EXISTS journal_{t}_ins AFTER INSERT ON main.{t}{when} BEGIN {put} END",
        f"CREATE TEMP TRIGGER IF NOT EXISTS journal_{t}_upd AFTER UPDATE ON main.{t}{when} BEGIN {moved} {put} END",
        f"CREATE TEMP TRIGGER IF NOT EXISTS journal_{t}_del AFTER DELETE ON main.{t}{when_old} BEGIN {delete} END",
    ]


#: the sync mark: a change in the batch needs the catalog's WAL synced (see above)
SYNC_MARK = "INSERT OR IGNORE INTO journal_capture(n, tbl, op) VALUES (-1, '', 'sync')"
#: journal bookkeeping in ``meta`` the start does not rebuild (journal_seq and
#: journal_head are replayed with the records)
_META_SYNC = ("(NEW.key LIKE 'journal%' AND NEW.key NOT IN ('journal_seq', 'journal_head')"
              " OR NEW.key = 'schema_version')")


def _sync_trigger_sql(table: str) -> list[str]:
    """Triggers that set the sync mark for changes the journal does not replay."""
    mark = f"BEGIN {SYNC_MARK}; END"
    name = f"journal_sync_{table}"
    if table == "meta":
        return [f"CREATE TEMP TRIGGER IF NOT EXISTS {name}_ins AFTER INSERT ON main.meta WHEN {_META_SYNC} {mark}",
                f"CREATE TEMP TRIGGER IF NOT EXISTS {name}_upd AFTER UPDATE ON main.meta WHEN {_META_SYNC} {mark}",
                f"CREATE TEMP TRIGGER IF NOT EXISTS {name}_del AFTER DELETE ON main.meta"
                f" WHEN {_META_SYNC.replace('NEW.', 'OLD.')} {mark}"]
    delete = f"CREATE TEMP TRIGGER IF NOT EXISTS {name}_del AFTER DELETE ON main.{table} {mark}"
    if table == "chunks":  # a new row or a new touched time is rebuilt or harmless to lose
        moved = "OLD.pack_id IS NOT NEW.pack_id OR OLD.offset IS NOT NEW.offset OR OLD.id IS NOT NEW.id"
        return [delete, f"CREATE TEMP TRIGGER IF NOT EXISTS {name}_upd AFTER UPDATE ON main.chunks WHEN {moved} {mark}"]
    if table == "journal_packs":  # last_seq is replayed with the records
        changed = "OLD.name IS NOT NEW.name OR OLD.kind IS NOT NEW.kind OR OLD.first_seq IS NOT NEW.first_seq"
        return [delete, f"CREATE TEMP TRIGGER IF NOT EXISTS {name}_ins AFTER INSERT ON main.journal_packs {mark}",
                f"CREATE TEMP TRIGGER IF NOT EXISTS {name}_upd AFTER UPDATE ON main.journal_packs WHEN {changed} {mark}"]
    return [delete, f"CREATE TEMP TRIGGER IF NOT EXISTS {name}_ins AFTER INSERT ON main.{table} {mark}",
            f"CREATE TEMP TRIGGER IF NOT EXISTS {name}_upd AFTER UPDATE ON main.{table} {mark}"]


_DRAIN = f"SELECT n, tbl, op, {_slots(MAX_COLUMNS)} FROM journal_capture WHERE n > ? ORDER BY n LIMIT ?"


class Capture:
    """Installs the triggers on a writer connection and hands out what they caught."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.shapes = table_shapes(conn)
        #: whether the batch drained last needs the catalog's WAL synced (see above)
        self.sync_due = False
        self._others = [r[0] for r in conn.execute(
            "SELECT name FROM main.sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite%' ORDER BY name")
            if r[0] not in DURABLE_TABLES or r[0] == "meta"]
        self._widths = {(t, op): len(s.columns if op == "put" else s.key) for t, s in self.shapes.items()
                        for op in ("put", "del")}

    def install(self, conn: sqlite3.Connection, *, marks: bool = True) -> None:
        """Create the TEMP table and triggers on ``conn`` (idempotent; per connection);
        ``marks``: also the triggers of the sync mark (only the server needs them)."""
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS journal_capture("
            f"n INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL, {_slots(MAX_COLUMNS)})"
        )
        for shape in self.shapes.values():
            for sql in _trigger_sql(shape):
                conn.execute(sql)
        for table in self._others if marks else ():
            for sql in _sync_trigger_sql(table):
                conn.execute(sql)

    def drain(self, conn: sqlite3.Connection, limit: int) -> Iterator[list[tuple[str, str, tuple[object, ...]]]]:
        """Inside the writer's transaction: the captured changes in order, in lists of
        at most ``limit``; each list is removed from the capture table once taken.
        Sets :attr:`sync_due` when the batch left the sync mark."""
        last = -2
        self.sync_due = False
        while True:
            rows = conn.execute(_DRAIN, (last, limit)).fetchall()
            if not rows:
                break
            full = len(rows) == limit
            last = rows[-1][0]
            if rows[0][0] == -1:
                self.sync_due = True
                del rows[0]
            widths = self._widths
            out = [(row[1], row[2], row[3 : 3 + widths[row[1], row[2]]]) for row in rows]
            if out:
                yield out
            if not full:
                break
        conn.execute("DELETE FROM journal_capture")
