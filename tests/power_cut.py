"""A simulated power cut for the catalog (DESIGN.md §20.7): copy the catalog files at a
point where the WAL was just synced, let writes go on unsynced, then put the copy back
as the disk would hold it after the machine restarted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from davbackup.maintenance.recover import catalog_files

CATALOG_FILES = ("catalog.sqlite", "catalog.sqlite-wal")


def synced_copy(root: Path) -> dict[str, bytes]:
    """The catalog of the repository at ``root`` as a disk holds it right after its WAL
    was synced (checkpointed into the database file, so the copy is one file's
    consistent bytes). A server may be writing meanwhile: the checkpoint waits for it."""
    conn = sqlite3.connect(root / "catalog.sqlite", isolation_level=None, timeout=30)
    try:
        busy, _frames, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()
    return {name: (root / name).read_bytes() for name in CATALOG_FILES if (root / name).exists()}


def power_cut(root: Path, copy: dict[str, bytes]) -> None:
    """The catalog files as ``copy`` has them (what was not synced is gone), after a
    restart of the machine (the boot the server synced in the catalog was another)."""
    for path in catalog_files(root / "catalog.sqlite"):
        path.unlink(missing_ok=True)
    for name, data in copy.items():
        (root / name).write_bytes(data)
    conn = sqlite3.connect(root / "catalog.sqlite", isolation_level=None)
    try:
        assert conn.execute("UPDATE meta SET value='an earlier boot' WHERE key='journal_boot'").rowcount == 1
    finally:
        conn.close()
