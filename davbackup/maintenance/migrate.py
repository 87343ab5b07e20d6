"""`davbackup migrate`: move an embedded repository into PostgreSQL and an object store.

The target is a new repository with the same identity, keys and catalog contents
(DESIGN.md §7.5): the same passphrases open it, every file, version, history state,
user, lock and upload session is there, and chunk IDs and pack names are unchanged.
In this order, so that an interruption leaves the source untouched and the target
recognisably unfinished:

1. checks: no server writes to the source, the bucket prefix and the database are
   empty (the catalog is created at once, so a second migrate is refused);
2. every pack is read whole, every blob the catalog points into it is opened and
   verified (tag and chunk ID, as ``check --read-data``), and the pack is written
   to the store as one object; a blob that fails stops the migration;
3. the catalog rows are copied table by table (PostgreSQL ``COPY``) in one
   transaction, identity sequences are moved past the copied IDs, open packs are
   sealed, and row counts are compared;
4. the key slots and, last, ``config.json`` are written to the store: only now is
   the target a repository.

The other direction, cluster → embedded, is :mod:`davbackup.maintenance.migrate_back`.
Either way the source is never changed, and rows keep their IDs (history rows their
``rowid``), so a round trip gives back the same catalog.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from davbackup import chunk_index
from davbackup.catalog import read_meta
from davbackup.errors import IntegrityError, Locked, RepositoryError, UsageError
from davbackup.pack import HEADER_SIZE, PACK_MAGIC, BlobError

if TYPE_CHECKING:
    from davbackup.repository import Repository

#: identity columns in PostgreSQL: (table, column)
IDENTITIES = (("versions", "id"), ("segments", "id"), ("packs", "id"), ("node_history", "rowid"),
              ("props_history", "rowid"))
#: meta keys the new catalog sets itself
OWN_META = ("schema_version", "row_auth", "repo_id")

Progress = Callable[[str], None]


@dataclass
class MigrateReport:
    packs: int = 0
    pack_bytes: int = 0
    chunks_verified: int = 0
    rows: int = 0
    seconds: float = 0.0


def migrate(source: "Repository", catalog_url: str, packs_url: str, progress: Progress = print) -> MigrateReport:
    """Copy ``source`` (an embedded repository, opened ``read``) to a new repository
    whose catalog is ``catalog_url`` and whose packs are at ``packs_url``."""
    from davbackup.catalog_pg import PgCatalog
    from davbackup.location import PackLocation

    if source.catalog.shared:
        raise RepositoryError("the source is already a repository on PostgreSQL")
    if source.writer_active():
        raise Locked(f"{source.root}: a server is writing to this repository; stop it before migrating")
    if read_meta(source.catalog.reader(), "row_auth") is None:
        raise UsageError(f"{source.root}: the catalog predates row authentication; open it once with a"
                         " writable command (e.g. `davbackup user list`) to upgrade it, then migrate")
    t0 = time.monotonic()
    report = MigrateReport()
    spool = Path(tempfile.mkdtemp(prefix="davbackup-migrate-"))  # the source directory is not touched
    try:
        target = PackLocation(spool, packs_url)
        target.check_new()
        catalog = PgCatalog(catalog_url, create=True)  # refuses a database that holds a catalog
        try:
            catalog.check_repository(source.config.repo_id, bind=True)
            storage = target.storage(writer=True)
            try:
                copy_packs(source, storage, report, progress)
            finally:
                storage.close()
            _copy_catalog(source, catalog, report, progress)
        finally:
            catalog.close()
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    for name in source.location.meta.list("keys", ".json"):
        target.meta.write(name, source.location.meta.read(name))
    target.meta.write("config.json", source.location.meta.read("config.json"), 0o644)  # last: now it is one
    # The target's metadata journal starts with its first checkpoint (DESIGN.md §20.8):
    # from here on the object store alone is a backup of it.
    from davbackup.repository import Repository

    local = Path(tempfile.mkdtemp(prefix="davbackup-migrate-"))
    Repository(local, source.config, source.keys, "admin", PackLocation(local, packs_url), catalog_url,
               temporary_root=True).close()
    report.seconds = time.monotonic() - t0
    return report


def copy_packs(source: "Repository", storage: Any, report: MigrateReport, progress: Progress) -> None:
    """Every pack of ``source`` into ``storage`` under its name, after opening and
    verifying every blob the catalog points into it."""
    conn = source.catalog.reader()
    packs = chunk_index.packs(conn)
    total = sum(source.storage.size(name) for _pid, name in packs)
    done = 0
    last = time.monotonic()
    for i, (pid, name) in enumerate(packs, start=1):
        size = source.storage.size(name)
        data = source.storage.read(name, 0, size)
        for cid, offset, stored_len in chunk_index.chunks_in_pack(conn, pid):
            blob = data[offset : offset + HEADER_SIZE + stored_len]
            try:
                source.codec.open(blob, expected_id=cid)
            except BlobError as exc:
                raise IntegrityError(
                    f"pack {name}: chunk {bytes(cid).hex()[:16]} at offset {offset} fails verification ({exc});"
                    " run `davbackup check --read-data` on the source first"
                ) from exc
            report.chunks_verified += 1
        if data[: len(PACK_MAGIC)] != PACK_MAGIC:
            raise IntegrityError(f"pack {name} does not start with the pack magic")
        appender = storage.create(name)  # writes the magic itself
        if appender.append(data[len(PACK_MAGIC) :]) != len(PACK_MAGIC):
            raise RepositoryError(f"pack {name}: the new pack does not start where the old one did")
        appender.close()  # uploads it whole and returns once the object is complete
        report.packs += 1
        report.pack_bytes += size
        done += size
        if time.monotonic() - last >= 2 or i == len(packs):
            last = time.monotonic()
            progress(f"packs: {i}/{len(packs)}, {done >> 20} of {total >> 20} MiB, "
                     f"{report.chunks_verified} chunks verified")


def _copy_catalog(source: "Repository", catalog: Any, report: MigrateReport, progress: Progress) -> None:
    dest = catalog._session  # the catalog's own session: one transaction for everything
    with dest.transaction():
        dest.execute("SELECT pg_advisory_xact_lock(%s, %s)", (0x64617662, 1))
        copy_rows(source.catalog.reader(), dest, report, progress)


#: with ``journal``, the journal's place that travels with the rows (recover, DESIGN.md §20.8)
JOURNAL_META = ("journal_seq", "journal_head", "journal_checkpoint")


def _meta_filter(journal: bool) -> str:
    if journal:
        return f" WHERE key NOT IN {OWN_META!r} AND (key NOT LIKE 'journal%' OR key IN {JOURNAL_META!r})"
    return f" WHERE key NOT IN {OWN_META!r} AND key NOT LIKE 'journal%'"


def copy_rows(src: Any, dest: Any, report: MigrateReport, progress: Progress, *, journal: bool = False) -> None:
    """Every row of the SQLite catalog ``src`` into the new PostgreSQL catalog behind
    ``dest`` (a psycopg session, in the caller's transaction): ``COPY`` table by
    table, identity sequences moved past the copied IDs, open packs sealed, row counts
    compared. The SQLite catalog's journal stays behind, unless ``journal`` (the
    catalog is then PostgreSQL's own, rebuilt from its journal: its packs and place
    come along)."""
    counts: dict[str, int] = {}
    skip = " AND name <> 'journal_outbox'" if journal else " AND name NOT LIKE 'journal%'"
    tables = [r[0] for r in src.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite%'"
        f"{skip} ORDER BY name")]  # the SQLite catalog's journal (DESIGN.md §20)
    for table in tables:
        columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})").fetchall()]
        target_columns = {r[0] for r in dest.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name=%s", (table,)).fetchall()}
        columns = [c for c in columns if c in target_columns]
        if "rowid" in target_columns:  # history rows keep their order and numbers
            columns.insert(0, "rowid")
        if not columns:
            raise RepositoryError(f"migrate: table {table} of the source has no counterpart in PostgreSQL")
        where = _meta_filter(journal) if table == "meta" else ""
        quoted = ", ".join(f'"{c}"' for c in columns)
        count = 0
        with dest.cursor().copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
            for row in src.execute(f"SELECT {', '.join(columns)} FROM {table}{where}"):
                copy.write_row(row)
                count += 1
        counts[table] = count
        report.rows += count
        progress(f"catalog: {table}: {count} rows")
    for table, column in IDENTITIES:
        dest.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                     f" (SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)")
    chunk_index.seal_open_packs(dest)
    for table, count in counts.items():
        where = _meta_filter(journal) if table == "meta" else ""
        got = dest.execute(f"SELECT count(*) FROM {table}{where}").fetchone()[0]
        if got != count:
            raise RepositoryError(f"migrate: {table} has {got} rows in PostgreSQL, {count} were copied")
