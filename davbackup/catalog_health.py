"""A cheap check of the catalog before a server starts on it (DESIGN.md §20.6).

A server must not serve (and add to) a catalog that is missing, not an SQLite
database, fails SQLite's ``quick_check``, has an unknown schema version, or whose
rows fail authentication: it would answer with wrong listings or lose writes. The
check costs one pass over the database pages (``quick_check``) and the verification
of every user's root and of the most recent node names, and its error names
`davbackup recover`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from davbackup.catalog import SCHEMA_VERSION, read_meta
from davbackup.errors import CatalogDamaged, IntegrityError
from davbackup.tree import Tree
from davbackup.tree_scan import newest_name_rows, root_name_row
from davbackup.users import names_and_roots

#: how many of the newest nodes have their names verified
SAMPLE = 1000


def _damaged(path: Path, detail: str) -> CatalogDamaged:
    repo = path.parent
    return CatalogDamaged(
        f"{path}: the catalog is damaged ({detail}). Do not serve from it: rebuild it from the packs with"
        f" `davbackup recover --repo {repo} --force` (the damaged catalog is moved aside, not deleted)"
    )


def check_file(path: Path) -> None:
    """Before the catalog is opened: it exists, is SQLite, passes quick_check and has a
    schema this program can open."""
    if not path.exists():
        raise CatalogDamaged(
            f"{path}: the catalog is missing. Rebuild it from the packs with `davbackup recover --repo {path.parent}`"
        )
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _damaged(path, str(exc)) from exc
    try:
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise _damaged(path, "SQLite quick_check: " + "; ".join(problems))
            value = read_meta(conn, "schema_version")
        except sqlite3.DatabaseError as exc:
            raise _damaged(path, str(exc)) from exc
        if value is None:
            raise _damaged(path, "no schema version")
        try:
            version = int(value)
        except ValueError:
            raise _damaged(path, f"schema version {value!r} is not a number") from None
        if not 1 <= version <= SCHEMA_VERSION:
            raise _damaged(path, f"schema version {version} is not one this davbackup knows (1..{SCHEMA_VERSION})")
    finally:
        conn.close()


def check_rows(path: Path, conn: sqlite3.Connection, tree: Tree) -> None:
    """After opening: every user has a root folder, and the names of every root and of
    the newest nodes verify (they are bound to their rows, DESIGN.md §7.2)."""
    try:
        for name, root_id in names_and_roots(conn):
            root = root_name_row(conn, root_id)
            if root is None:
                raise _damaged(path, f"user {name}: root folder {root_id} is missing or not a root folder")
            nid, parent, version, blob = root
            tree.open_name(blob, nid, parent, version)
        for nid, parent, version, blob in newest_name_rows(conn, SAMPLE):
            tree.open_name(blob, nid, parent, version)
    except IntegrityError as exc:
        raise _damaged(path, exc.message) from exc
    except sqlite3.DatabaseError as exc:
        raise _damaged(path, str(exc)) from exc
