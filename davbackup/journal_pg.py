"""The metadata journal on a PostgreSQL catalog (DESIGN.md §20.8).

The records are those of the SQLite catalog (davbackup/journal.py, §20.2); what is
PostgreSQL's own is how row changes are captured, how transactions of several nodes
get one order, and how a checkpoint is read:

* **Capture.** A row trigger on every durable table (:data:`JOURNAL_SCHEMA`, stored
  in the catalog) copies the new row (``put``) or the old one (``del``; a ``del`` and
  a ``put`` when an update changes the key) as ``jsonb`` into the session's TEMP table
  ``journal_capture`` — but only in a session that switched capture on
  (``davbackup.journal = on``), which every writer session of a process with a
  journal does when it connects (again after a reconnect, before any statement).
  The TEMP table takes part in the transaction and its savepoints, as SQLite's does.
* **Order.** Every write transaction of every node holds the catalog's write lock
  (``pg_advisory_xact_lock``, §7.5) from ``BEGIN`` to its end, and reads
  ``meta.journal_seq`` under it: transactions get their sequence numbers in the
  order in which they commit, so replaying records in ``seq`` order is replaying
  the commits in their order.
* **Epochs** come from the sequence ``journal_epochs``, taken in the transaction:
  ``nextval`` never hands out a value twice, also when the transaction rolls back,
  so a transaction that takes a sequence number after one that failed (its records
  may be in the packs) always has the greater epoch (§20.2's rule, without a
  committed epoch row).
* **Checkpoints** (§20.3) are the same SQLite file, filled from one ``REPEATABLE
  READ`` snapshot of the catalog (:func:`dump_tables`).

Every process with a PostgreSQL catalog writes its records before COMMIT, like the
embedded server does (there is no outbox): a record reaches the packs before its
transaction can commit, and a transaction whose records could not be made durable
rolls back (503/507, nothing written).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import psycopg

from davbackup import clock
from davbackup.catalog import read_metas
from davbackup.journal import GENESIS, Journal
from davbackup.journal_capture import DURABLE_TABLES, META_FILTER, ROWID, TableShape
from davbackup.storage import PackStorage

if TYPE_CHECKING:
    from davbackup.catalog_pg import PgCatalog

#: the journal's objects in a PostgreSQL catalog (run at creation, and on the first
#: open of a catalog created before them); then :func:`trigger_sql` per durable table
JOURNAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal_packs(
    name TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('journal', 'checkpoint')),
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    created DOUBLE PRECISION NOT NULL);
CREATE SEQUENCE IF NOT EXISTS journal_epochs;
CREATE OR REPLACE FUNCTION davbackup_journal_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    IF current_setting('davbackup.journal', true) IS DISTINCT FROM 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'meta' THEN
        IF TG_OP = 'DELETE' THEN
            IF OLD.key LIKE 'journal%' OR OLD.key = 'schema_version' THEN
                RETURN NULL;
            END IF;
        ELSIF NEW.key LIKE 'journal%' OR NEW.key = 'schema_version' THEN
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO pg_temp.journal_capture(tbl, op, r) VALUES (TG_TABLE_NAME, 'del', to_jsonb(OLD));
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        FOREACH k IN ARRAY TG_ARGV LOOP
            IF to_jsonb(OLD) -> k IS DISTINCT FROM to_jsonb(NEW) -> k THEN
                INSERT INTO pg_temp.journal_capture(tbl, op, r) VALUES (TG_TABLE_NAME, 'del', to_jsonb(OLD));
                EXIT;
            END IF;
        END LOOP;
    END IF;
    INSERT INTO pg_temp.journal_capture(tbl, op, r) VALUES (TG_TABLE_NAME, 'put', to_jsonb(NEW));
    RETURN NULL;
END $$;
"""

#: switches capture on in one session (run on every writer session of a journaling process)
_SESSION_SETUP = (
    "CREATE TEMP TABLE IF NOT EXISTS journal_capture(n BIGSERIAL PRIMARY KEY, tbl TEXT NOT NULL,"
    " op TEXT NOT NULL, r JSONB)",
    "SELECT set_config('davbackup.journal', 'on', false)",
)
_DRAIN = "SELECT n, tbl, op, r FROM pg_temp.journal_capture WHERE n > ? ORDER BY n LIMIT ?"


def primary_keys(conn: psycopg.Connection[Any], table: str) -> tuple[str, ...]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        (table,),
    ).fetchall()
    return tuple(str(r[0]) for r in rows)


def install_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the journal's table, sequence, function and triggers (idempotent), in
    the caller's transaction (which holds the catalog's write lock)."""
    conn.execute(JOURNAL_SCHEMA)
    for table in DURABLE_TABLES:
        keys = primary_keys(conn, table)
        args = ", ".join(f"'{k}'" for k in keys)
        conn.execute(f"DROP TRIGGER IF EXISTS journal_capture ON {table}")
        conn.execute(f"CREATE TRIGGER journal_capture AFTER INSERT OR UPDATE OR DELETE ON {table}"
                     f" FOR EACH ROW EXECUTE FUNCTION davbackup_journal_capture({args})")


def has_journal_schema(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('journal_packs') IS NOT NULL").fetchone()
    return bool(row and row[0])


def table_shapes(conn: psycopg.Connection[Any]) -> tuple[dict[str, TableShape], dict[str, frozenset[str]]]:
    """The durable tables' columns (in their order; ``rowid`` first where it is the
    key, as in SQLite's records) and keys, and each table's ``bytea`` columns."""
    shapes: dict[str, TableShape] = {}
    binary: dict[str, frozenset[str]] = {}
    for table in DURABLE_TABLES:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        if not rows:
            raise sqlite3.OperationalError(f"catalog has no table {table}")
        columns = tuple(str(r[0]) for r in rows)
        key = primary_keys(conn, table)
        if key == (ROWID,):
            columns = (ROWID, *(c for c in columns if c != ROWID))
        shapes[table] = TableShape(table, columns, key)
        binary[table] = frozenset(str(r[0]) for r in rows if r[1] == "bytea")
    return shapes, binary


def _value(value: Any, is_bytes: bool) -> object:
    """A column's value as ``to_jsonb`` gave it -> as the SQLite catalog holds it."""
    if is_bytes and isinstance(value, str):
        return bytes.fromhex(value[2:])  # bytea in JSON: "\\x0a1b..."
    return value


class PgCapture:
    """The :class:`davbackup.journal_capture.Capture` interface over the triggers of
    :data:`JOURNAL_SCHEMA`."""

    def __init__(self, conn: Any) -> None:
        self.shapes, self._binary = table_shapes(conn.raw)
        self.sync_due = False  # PostgreSQL commits are durable: never a WAL sync to ask for

    def install(self, conn: Any, *, marks: bool = False) -> None:
        """Switch capture on in the writer session ``conn`` (a :class:`davbackup.pgsql.
        PgConnection`) and in every session that replaces it."""
        if getattr(conn, "journal_capture", False):
            return
        conn.add_setup(_setup_session)
        conn.journal_capture = True

    def drain(self, conn: Any, limit: int) -> Iterator[list[tuple[str, str, tuple[object, ...]]]]:
        last = 0
        while True:
            rows = conn.execute(_DRAIN, (last, limit)).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            out = []
            for _n, table, op, row in rows:
                shape = self.shapes[table]
                binary = self._binary[table]
                names = shape.columns if op == "put" else shape.key
                out.append((table, op, tuple(_value(row[c], c in binary) for c in names)))
            yield out
            if len(rows) < limit:
                break
        conn.execute("DELETE FROM pg_temp.journal_capture")


def _setup_session(conn: psycopg.Connection[Any]) -> None:
    for statement in _SESSION_SETUP:
        conn.execute(statement)


class PgJournal(Journal):
    """The journal of any process on a PostgreSQL catalog: records are appended and
    synced before COMMIT (``early``), their epoch is a fresh value of the sequence
    ``journal_epochs``, and commits need no WAL sync of davbackup's own."""

    def __init__(self, storage: PackStorage, key: bytes, schema: int, pack_target_size: int) -> None:
        super().__init__(storage, key, schema, pack_target_size, early=True)
        self._epoch_due = False

    def install(self, conn: Any) -> None:
        if self.capture is None:
            self.capture = PgCapture(conn)  # type: ignore[assignment]
        assert self.capture is not None
        self.capture.install(conn)

    def before_batch(self, conn: Any) -> bool:
        return False  # the epoch is taken in each transaction (see _head)

    @property
    def durable_log(self) -> bool:
        return False

    def _head(self, conn: Any) -> tuple[int, bytes, int]:
        rows = read_metas(conn, ("journal_seq", "journal_head"))
        seq = int(rows.get("journal_seq", "0"))
        head = bytes.fromhex(rows["journal_head"]) if "journal_head" in rows else GENESIS
        epoch = int(conn.execute("SELECT nextval('journal_epochs')").fetchone()[0])
        return seq, head, epoch


# -- checkpoints (§20.3) ---------------------------------------------------------------------

#: rows fetched at a time from the snapshot
_FETCH = 5000


def dump_tables(catalog: PgCatalog, out: Path) -> int:
    """The durable tables of the catalog, from one ``REPEATABLE READ`` snapshot, into
    the new SQLite file ``out`` in the layout of davbackup/checkpoint.py's dumps;
    returns the journal sequence number of that state."""
    from davbackup.catalog_pg import read_metas_raw
    from davbackup.checkpoint import ROWID_COLUMN

    dest = sqlite3.connect(out, isolation_level=None)
    try:
        dest.execute("PRAGMA journal_mode=OFF")
        dest.execute("PRAGMA synchronous=OFF")
        dest.execute("BEGIN")
        with psycopg.connect(catalog.url) as src:
            src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            src.read_only = True
            with src.transaction():
                meta = read_metas_raw(src, ("journal_seq", "journal_head", "schema_version"))
                shapes, _binary = table_shapes(src)
                for table, shape in shapes.items():
                    names = [c for c in shape.columns if c != ROWID]
                    source = ([ROWID] if shape.by_rowid else []) + names
                    target = ([ROWID_COLUMN] if shape.by_rowid else []) + names
                    dest.execute(f"CREATE TABLE {table}({', '.join(_q(c) for c in target)})")
                    where = f" WHERE {META_FILTER}" if table == "meta" else ""
                    insert = f"INSERT INTO {table} VALUES ({', '.join('?' * len(target))})"
                    with src.cursor(name=f"checkpoint_{table}") as cursor:
                        cursor.execute(f"SELECT {', '.join(_q(c) for c in source)} FROM {table}{where}")
                        while rows := cursor.fetchmany(_FETCH):
                            dest.executemany(insert, rows)
        seq = int(meta.get("journal_seq", "0"))
        head = bytes.fromhex(meta["journal_head"]) if "journal_head" in meta else GENESIS
        dest.execute("CREATE TABLE checkpoint_info(seq INTEGER, head BLOB, schema INTEGER, created REAL)")
        dest.execute("INSERT INTO checkpoint_info VALUES (?, ?, ?, ?)",
                     (seq, head, int(meta.get("schema_version", "0")), clock.now()))
        dest.execute("COMMIT")
    finally:
        dest.close()
    return seq


def _q(column: str) -> str:
    return f'"{column}"'
