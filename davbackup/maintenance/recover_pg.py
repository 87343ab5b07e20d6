"""`davbackup recover --catalog URL --packs URL`: rebuild a PostgreSQL catalog from the
object store alone (DESIGN.md §20.8).

The records and checkpoints of a PostgreSQL catalog have the format of the embedded
one's, so the rebuild is the embedded recovery (davbackup/maintenance/recover.py: one
scan of every pack, the newest checkpoint, the records after it) into a scratch
SQLite catalog in a local directory, whose rows are then copied into PostgreSQL
(``COPY``, as `migrate` does) together with the journal's place (``journal_seq``,
``journal_head``, the checkpoint and the journal packs), so the journal goes on
where it ended. The copy is one transaction: the database holds the old catalog or
the complete new one, never a part. An existing catalog is replaced only with
``--force`` and when no node serves it; it is kept, renamed, in the schema
``davbackup_before_recover_<time>`` of the same database.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from davbackup.catalog_pg import CLASS, WRITE, WRITERS, create_schema, redact
from davbackup.errors import Locked, RepositoryError, UsageError
from davbackup.maintenance.migrate import MigrateReport, copy_rows
from davbackup.maintenance.recover import Progress, RecoverReport, recover

if TYPE_CHECKING:
    from davbackup.config import RepoConfig
    from davbackup.keys import MasterKeys
    from davbackup.location import PackLocation

ASIDE_PREFIX = "davbackup_before_recover_"


def recover_catalog(catalog_url: str, location: PackLocation, config: RepoConfig, keys: MasterKeys, *,
                    force: bool, progress: Progress, scratch_parent: Path | None = None) -> tuple[RecoverReport,
                                                                                                  str | None]:
    """Rebuild the catalog in the database ``catalog_url`` from the packs at
    ``location``; returns the report and the schema the old catalog was moved to (if
    there was one)."""
    from davbackup.repository import Repository

    where = redact(catalog_url)
    try:
        conn = psycopg.connect(catalog_url, autocommit=True)
    except psycopg.Error as exc:
        raise RepositoryError(f"{where}: cannot connect to the catalog database ({exc})") from exc
    scratch = Path(tempfile.mkdtemp(prefix="davbackup-recover-", dir=scratch_parent))
    try:
        existing = _has_catalog(conn)
        if existing and not force:
            raise UsageError(f"{where}: the database holds a catalog; recover replaces it only with --force"
                             " (it is then kept in a schema of its own)")
        if existing and not _value(conn, "SELECT pg_try_advisory_lock(%s, %s)", (CLASS, WRITERS)):
            raise Locked(f"{where}: a node is serving this catalog; stop every node before recovering it")
        storage = location.storage()
        try:
            report = recover(scratch, storage, keys, force=False, progress=progress,
                             open_repo=lambda path: Repository(scratch, config, keys, "read", location,
                                                               catalog_path=path))
        finally:
            storage.close()
        progress(f"copying the rebuilt catalog into {where}")
        aside = _install(conn, scratch / "catalog.sqlite", config.repo_id, existing, progress)
    finally:
        conn.close()
        shutil.rmtree(scratch, ignore_errors=True)
    # The journal goes on from the checkpoint loaded; a first one if none was found.
    Repository(Path(tempfile.mkdtemp(prefix="davbackup-recover-")), config, keys, "admin", location, catalog_url,
               temporary_root=True).close()
    return report, aside


def _value(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def _has_catalog(conn: psycopg.Connection[Any]) -> bool:
    return bool(_value(conn, "SELECT to_regclass('meta') IS NOT NULL"))


def _install(conn: psycopg.Connection[Any], path: Path, repo_id: str, existing: bool,
             progress: Progress) -> str | None:
    """In one transaction: the old catalog's schema renamed aside (if any), a new
    one created, the rows copied."""
    import sqlite3

    src = sqlite3.connect(path)
    aside = None
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (CLASS, WRITE))
            if existing:
                schema = str(_value(conn, "SELECT current_schema()"))
                aside = ASIDE_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                conn.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{aside}"')
                conn.execute(f'CREATE SCHEMA "{schema}"')
            create_schema(conn, repo_id)
            copy_rows(src, conn, MigrateReport(), progress, journal=True)
    finally:
        src.close()
    return aside
