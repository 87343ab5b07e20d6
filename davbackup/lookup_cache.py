"""Path lookups remembered until the catalog changes (DESIGN.md §10).

A keep-alive client reading a file in ranges (a player, a mounted share, a restore)
sends GET after GET for the same path, and each looked the path up again: one query
per folder on the way, about 16 µs at the root and 36 µs four folders down. SQLite's
``PRAGMA data_version`` (3 µs) tells a connection whether any other connection, in
this process or another, has committed since it last asked; the server's read
connections never write (every change goes through the catalog's writer connection),
so an unchanged value means nothing a lookup reads can have changed.

Each thread's read connection gets its own memory, checked against the value read
*before* the lookup it remembers: a commit that lands between the two changes the
value, and the answer is looked up again next time. Answers are immutable
:class:`~davbackup.entry.Entry` snapshots (or None), exactly what a lookup at the
moment of the check returns. A shared catalog (PostgreSQL) has no such value: its
lookups are not remembered.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import TYPE_CHECKING, Callable, Generic, Hashable, TypeVar

if TYPE_CHECKING:
    from davbackup.catalog import Catalog

#: answers kept per thread; all are dropped when full (or when the catalog changes)
MAX_ENTRIES = 256

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LookupCache(Generic[K, V]):
    """Answers of one kind (path lookups; the users' rows of :mod:`davbackup.users`),
    each immutable, kept per thread until the catalog changes."""

    def __init__(self) -> None:
        self._local = threading.local()

    def lookup(self, catalog: Catalog, key: K, resolve: Callable[[sqlite3.Connection], V]) -> V:
        """``resolve(conn)`` on this thread's read connection of ``catalog``, or what it
        returned before there if the catalog has not changed since."""
        conn = catalog.reader()
        if catalog.shared:
            return resolve(conn)
        version = conn.execute("PRAGMA data_version").fetchone()[0]  # before the lookup it may keep
        local = self._local
        entries: dict[K, V] | None = getattr(local, "entries", None)
        if entries is None or local.conn is not conn or local.version != version:
            entries = local.entries = {}
            local.conn, local.version = conn, version
        try:
            return entries[key]
        except KeyError:
            pass
        entry = resolve(conn)
        if len(entries) >= MAX_ENTRIES:
            entries.clear()
        entries[key] = entry
        return entry
