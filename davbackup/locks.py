"""WebDAV lock records, kept in the catalog so they survive a restart (DESIGN.md §7.4).

The core stores opaque JSON records under their token and lock root; the semantics
(conflicts, depth, timeouts) belong to the WebDAV layer. The one field the core reads
is ``principal``, the name of the user who holds the lock: removing a user removes
their locks (:func:`delete_user_locks`), so they cannot bind a later user of that name.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from davbackup.catalog import Catalog
from davbackup.errors import Locked


class LockTable:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def put(self, token: str, root: str, expire: float, data: dict[str, Any]) -> None:
        text = json.dumps(data)

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO locks(token, root, expire, data) VALUES (?, ?, ?, ?)",
                (token, root, expire, text),
            )

        self._catalog.write(txn)

    def put_unless(
        self, token: str, root: str, expire: float, data: dict[str, Any],
        conflict: Callable[[list[dict[str, Any]]], str | None],
    ) -> None:
        """Store a new lock unless ``conflict``, given every record on ``root``, on a
        folder above it and below it as the catalog holds them inside the same write
        transaction, names a reason to refuse (then :class:`Locked`, nothing stored).
        With a catalog shared by several nodes this makes the conflict check and the
        insert one step across the cluster (write transactions are serialised)."""
        text = json.dumps(data)
        parts = [p for p in root.split("/") if p]
        above = ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
        below = root.rstrip("/") + "/"

        def txn(conn: sqlite3.Connection) -> None:
            marks = ",".join("?" * (len(above) + 1))
            rows = conn.execute(
                f"SELECT data FROM locks WHERE root IN ({marks}) OR substr(root, 1, ?) = ?",
                (*above, root, len(below), below),
            ).fetchall()
            reason = conflict([json.loads(r[0]) for r in rows])
            if reason is not None:
                raise Locked(reason)
            conn.execute(
                "INSERT OR REPLACE INTO locks(token, root, expire, data) VALUES (?, ?, ?, ?)",
                (token, root, expire, text),
            )

        self._catalog.write(txn)

    def get(self, token: str) -> dict[str, Any] | None:
        row = self._catalog.reader().execute("SELECT data FROM locks WHERE token=?", (token,)).fetchone()
        return json.loads(row[0]) if row else None

    def delete(self, token: str) -> None:
        self._catalog.write(lambda conn: conn.execute("DELETE FROM locks WHERE token=?", (token,)))

    def list(self, root_prefix: str | None = None) -> list[dict[str, Any]]:
        conn = self._catalog.reader()
        if root_prefix is None:
            rows = conn.execute("SELECT data FROM locks")
        else:
            rows = conn.execute(
                "SELECT data FROM locks WHERE substr(root, 1, ?) = ?", (len(root_prefix), root_prefix)
            )
        return [json.loads(r[0]) for r in rows]

    def delete_expired(self, now: float) -> int:
        return int(
            self._catalog.write(lambda conn: conn.execute("DELETE FROM locks WHERE expire>=0 AND expire<?", (now,)).rowcount)
        )


def delete_user_locks(conn: sqlite3.Connection, user: str) -> int:
    """Inside a transaction: delete every lock record held by ``user``."""
    return int(
        conn.execute("DELETE FROM locks WHERE json_extract(data, '$.principal') = ?", (user,)).rowcount
    )
