"""The catalog's schema (DESIGN.md §7.1) and its migrations from each older version.

A new catalog is created at version 1 and upgraded through every migration, so the
upgrade path runs for every repository (davbackup/catalog.py, ``Catalog._migrate``).
"""

from __future__ import annotations

import sqlite3
from typing import Callable

from davbackup import chunklists

SCHEMA_VERSION = 4

SCHEMA_V1 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users(
    name TEXT PRIMARY KEY,
    pw_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('rw', 'ro')),
    root_id INTEGER NOT NULL,
    created REAL NOT NULL);
CREATE TABLE nodes(
    id INTEGER PRIMARY KEY,
    parent_id INTEGER,
    name_hash BLOB NOT NULL,
    name_enc BLOB NOT NULL,
    is_dir INTEGER NOT NULL,
    version_id INTEGER,
    created REAL NOT NULL,
    modified REAL NOT NULL);
CREATE UNIQUE INDEX nodes_by_parent ON nodes(parent_id, name_hash);
CREATE INDEX nodes_by_version ON nodes(version_id) WHERE version_id IS NOT NULL;
CREATE TABLE versions(
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    created REAL NOT NULL,
    orphaned REAL,
    checksums BLOB);
CREATE INDEX versions_orphaned ON versions(orphaned) WHERE orphaned IS NOT NULL;
CREATE TABLE version_chunks(
    version_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    chunk_id BLOB NOT NULL,
    PRIMARY KEY (version_id, offset)) WITHOUT ROWID;
CREATE INDEX version_chunks_by_chunk ON version_chunks(chunk_id);
CREATE TABLE packs(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('open', 'sealed')),
    created REAL NOT NULL);
CREATE TABLE chunks(
    id BLOB PRIMARY KEY,
    pack_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    plain_len INTEGER NOT NULL,
    touched REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX chunks_by_pack ON chunks(pack_id);
CREATE TABLE props(
    node_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    value_enc BLOB NOT NULL,
    PRIMARY KEY (node_id, name)) WITHOUT ROWID;
CREATE TABLE locks(
    token TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    expire REAL NOT NULL,
    data TEXT NOT NULL);
CREATE INDEX locks_by_root ON locks(root);
CREATE TABLE upload_sessions(
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    path_hash BLOB NOT NULL,
    path_enc BLOB NOT NULL,
    protocol TEXT NOT NULL,
    total INTEGER,
    received INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}');
CREATE INDEX upload_sessions_by_path ON upload_sessions(user_name, path_hash);
CREATE TABLE session_chunks(
    session_id TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    chunk_id BLOB NOT NULL,
    is_tail INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, offset)) WITHOUT ROWID;
CREATE INDEX session_chunks_by_chunk ON session_chunks(chunk_id);
"""

# Version 2 (history, quotas; DESIGN.md §15): every node and property row carries the
# time its state began (``born``); replaced states move to ``node_history`` and
# ``props_history``; ``moments`` lists the seconds in which each user's tree changed;
# users get a quota and a running total of their live bytes.
SCHEMA_V2 = """
ALTER TABLE nodes ADD COLUMN born REAL NOT NULL DEFAULT 0;
UPDATE nodes SET born = coalesce((SELECT v.created FROM versions v WHERE v.id = nodes.version_id), created);
CREATE TABLE node_history(
    node_id INTEGER NOT NULL,
    owner INTEGER NOT NULL,
    parent_id INTEGER,
    name_hash BLOB NOT NULL,
    name_enc BLOB NOT NULL,
    is_dir INTEGER NOT NULL,
    version_id INTEGER,
    created REAL NOT NULL,
    modified REAL NOT NULL,
    born REAL NOT NULL,
    died REAL NOT NULL);
CREATE INDEX node_history_by_parent ON node_history(parent_id, name_hash, died);
CREATE INDEX node_history_by_node ON node_history(node_id, born);
CREATE INDEX node_history_by_version ON node_history(version_id) WHERE version_id IS NOT NULL;
CREATE INDEX node_history_by_owner ON node_history(owner, died);
ALTER TABLE props ADD COLUMN born REAL NOT NULL DEFAULT 0;
CREATE TABLE props_history(
    node_id INTEGER NOT NULL,
    owner INTEGER NOT NULL,
    name TEXT NOT NULL,
    value_enc BLOB NOT NULL,
    born REAL NOT NULL,
    died REAL NOT NULL);
CREATE INDEX props_history_by_node ON props_history(node_id, died);
CREATE INDEX props_history_by_owner ON props_history(owner, died);
CREATE TABLE moments(owner INTEGER NOT NULL, second INTEGER NOT NULL, PRIMARY KEY (owner, second)) WITHOUT ROWID;
ALTER TABLE users ADD COLUMN quota INTEGER;
ALTER TABLE users ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
"""


def _v2_totals(conn: sqlite3.Connection) -> None:
    """Each user's live bytes and the seconds their current states began in."""
    for (root,) in conn.execute("SELECT root_id FROM users").fetchall():
        sub = (
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id)"
        )
        used = conn.execute(
            f"{sub} SELECT coalesce(sum(v.size), 0) FROM sub JOIN nodes n ON n.id = sub.id"
            " JOIN versions v ON v.id = n.version_id",
            (root,),
        ).fetchone()[0]
        conn.execute("UPDATE users SET used=? WHERE root_id=?", (used, root))
        conn.execute(
            f"{sub} INSERT OR IGNORE INTO moments(owner, second)"
            " SELECT ?, CAST(n.born AS INTEGER) FROM sub JOIN nodes n ON n.id = sub.id",
            (root, root),
        )


Migration = str | Callable[[sqlite3.Connection], None]

# Migrations from version N to N+1, applied in order inside one transaction each.
# Version 3: chunk lists stored as shared segments (DESIGN.md §7.3, davbackup/chunklists.py).
# Also version 3: chunks found damaged (by a read or by check --read-data), so that a
# client uploading the same content stores a fresh copy (DESIGN.md §12.1).
SCHEMA_V3_DAMAGED = """
CREATE TABLE damaged_chunks(id BLOB PRIMARY KEY, found REAL NOT NULL, reason TEXT NOT NULL) WITHOUT ROWID;
"""
# Version 4: the metadata journal in the packs (DESIGN.md §20, davbackup/journal.py):
# records committed but not yet known synced, and the packs holding records and checkpoints.
SCHEMA_V4_JOURNAL = """
CREATE TABLE journal_outbox(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE journal_packs(
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('journal', 'checkpoint')),
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    created REAL NOT NULL);
"""
MIGRATIONS: dict[int, list[Migration]] = {
    1: [SCHEMA_V2, _v2_totals],
    2: [chunklists.migrate, SCHEMA_V3_DAMAGED],
    3: [SCHEMA_V4_JOURNAL],
}


def run_script(conn: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
