"""`davbackup migrate --to embedded`: move a cluster repository (PostgreSQL and an
object store) back into one directory with SQLite and local packs.

The mirror image of :mod:`davbackup.maintenance.migrate`, in the same order, so an
interruption leaves the source untouched and the target recognisably unfinished:

1. checks: no node serves the repository, the target directory is new or empty; the
   cluster's gc lock is held throughout, so no gc deletes or rewrites packs meanwhile;
2. every pack is read whole from the store, every blob the catalog points into it
   is opened and verified (tag and chunk ID), and the pack is written to
   ``DIR/packs`` under its name; a blob that fails stops the migration;
3. the catalog rows are copied table by table from one read-only snapshot of the
   database into a new ``DIR/catalog.sqlite`` in one SQLite transaction, with their
   IDs (history rows with their ``rowid``); open packs are sealed; row counts are
   compared; what exists only in a cluster (the node numbers of packs, the lock
   epoch) is left behind, anything else the database holds and SQLite has no place
   for stops the migration; the embedded catalog's metadata journal starts empty
   (the first writable open writes a checkpoint: from then on the packs alone are a
   backup again, DESIGN.md §20);
4. the key slots and, last, ``config.json`` are written: only now is ``DIR`` a
   repository. The same passphrases open it.

On failure the target directory is emptied again (it was new or empty).
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from davbackup import chunk_index
from davbackup.catalog import Catalog, write_transaction
from davbackup.errors import Locked, RepositoryError, UsageError
from davbackup.location import PackLocation
from davbackup.maintenance.migrate import MigrateReport, Progress, copy_packs
from davbackup.storage import LocalPackStorage

if TYPE_CHECKING:
    from davbackup.repository import Repository

#: what only a cluster has: tables and (table, column) pairs not copied
CLUSTER_ONLY_TABLES = frozenset({"lock_epoch"})
CLUSTER_ONLY_COLUMNS = frozenset({("packs", "node")})
#: the metadata journal (DESIGN.md §20), each catalog's own: started afresh by the
#: first writable open (which writes a checkpoint)
EMBEDDED_ONLY_TABLES = "journal%"
#: meta keys not copied: the new catalog's own version, the cluster's repository
#: binding, and journal state a forward migration may have carried along
META_FILTER = " WHERE key NOT IN ('schema_version', 'repo_id') AND key NOT LIKE 'journal%'"
BATCH = 5000


def migrate_to_embedded(source: "Repository", target: Path, progress: Progress = print) -> MigrateReport:
    """Copy ``source`` (a repository on PostgreSQL, opened ``read``) into the new
    embedded repository ``target``."""
    if not source.catalog.shared:
        raise UsageError(f"{source.location.describe()}: the source is already an embedded repository")
    if source.writer_active():
        raise Locked("a node is serving this repository; stop every node before migrating")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target}: exists and is not an empty directory")
    with source.exclusive("gc"):  # no gc deletes or rewrites packs meanwhile
        return _migrate(source, target, progress)


def _migrate(source: "Repository", target: Path, progress: Progress) -> MigrateReport:
    t0 = time.monotonic()
    report = MigrateReport()
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.chmod(0o700)
    try:
        (target / "packs").mkdir(mode=0o700)
        catalog_path = target / "catalog.sqlite"
        catalog_path.touch(mode=0o600, exist_ok=False)
        Catalog(catalog_path, create=True).close()  # the current schema, empty
        storage = LocalPackStorage(target / "packs")
        try:
            copy_packs(source, storage, report, progress)
        finally:
            storage.close()
        _copy_catalog(source.catalog.url, catalog_path, report, progress)  # type: ignore[attr-defined]
        meta = PackLocation(target).meta
        for name in source.location.meta.list("keys", ".json"):
            meta.write(name, source.location.meta.read(name))
        meta.write("config.json", source.location.meta.read("config.json"), 0o644)  # last: now it is one
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in target.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    report.seconds = time.monotonic() - t0
    return report


def _copy_catalog(url: str, path: Path, report: MigrateReport, progress: Progress) -> None:
    import psycopg

    dest = sqlite3.connect(path, isolation_level=None)
    try:
        dest.execute("PRAGMA synchronous=FULL")
        with psycopg.connect(url) as src:
            src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot of every table
            src.read_only = True
            with write_transaction(dest):
                _copy_tables(src, dest, report, progress)
                chunk_index.seal_open_packs(dest)
    finally:
        dest.close()


def _columns_of(src: Any, table: str) -> set[str]:
    rows = src.execute("SELECT column_name FROM information_schema.columns"
                       " WHERE table_schema = current_schema() AND table_name = %s", (table,)).fetchall()
    return {r[0] for r in rows}


def _copy_tables(src: Any, dest: sqlite3.Connection, report: MigrateReport, progress: Progress) -> None:
    tables = [r[0] for r in dest.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite%' AND name NOT LIKE ?"
        " ORDER BY name", (EMBEDDED_ONLY_TABLES,))]
    source_tables = {r[0] for r in src.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'").fetchall()}
    # (both catalogs have a metadata journal of their own, neither travels)
    unplaced = {t for t in source_tables if not t.startswith("journal")} - set(tables) - CLUSTER_ONLY_TABLES
    if unplaced:
        raise RepositoryError(f"migrate: the catalog has tables an embedded repository has no place for: "
                              f"{', '.join(sorted(unplaced))} (a newer davbackup wrote it?)")
    for table in tables:
        if table not in source_tables:
            raise RepositoryError(f"migrate: table {table} has no counterpart in the PostgreSQL catalog")
        target_columns = [r[1] for r in dest.execute(f"PRAGMA table_info({table})").fetchall()]
        source_columns = _columns_of(src, table)
        lost = {c for c in source_columns - set(target_columns) if (table, c) not in CLUSTER_ONLY_COLUMNS}
        lost.discard("rowid")  # SQLite's own rowid, copied below
        if lost:
            raise RepositoryError(f"migrate: column(s) {', '.join(sorted(lost))} of {table} have no place in SQLite")
        columns = [c for c in target_columns if c in source_columns]
        if "rowid" in source_columns:  # history rows keep their order and numbers
            columns.insert(0, "rowid")
        quoted = ", ".join(f'"{c}"' for c in columns)
        where = META_FILTER if table == "meta" else ""
        insert = f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' for _ in columns)})"
        count = 0
        with src.cursor(name=f"migrate_{table}") as cursor:  # server-side: large tables are streamed
            cursor.execute(f"SELECT {quoted} FROM {table}{where}")
            while rows := cursor.fetchmany(BATCH):
                dest.executemany(insert, rows)
                count += len(rows)
        copied = dest.execute(f"SELECT count(*) FROM {table}{where}").fetchone()[0]
        if copied != count:
            raise RepositoryError(f"migrate: {table} has {copied} rows in SQLite, {count} were copied")
        report.rows += count
        progress(f"catalog: {table}: {count} rows")
