"""Each catalog concept owns its SQL (issue 7; STYLE.md, "one module per on-disk concept").

The SQL of every module of the core and the server is read out of its string literals
(docstrings aside). A statement that writes a table (INSERT, UPDATE, DELETE, ALTER)
may only stand in a module of the concept that owns the table; one that reads a table
of another concept is allowed only where READS_ACROSS says why. Maintenance commands,
the provider and the command line own no table: they call the owners' functions.

The exceptions are kept short on purpose, and an exception nothing needs any more
fails the test, so the lists only shrink.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: concept -> (its modules, relative to the repository root; the tables it owns)
CONCEPTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "catalog": (("davbackup/catalog.py", "davbackup/catalog_schema.py", "davbackup/catalog_pg.py"), ("meta", "lock_epoch")),
    "tree": (
        ("davbackup/tree.py", "davbackup/tree_bulk.py", "davbackup/tree_scan.py", "davbackup/listing.py",
         "davbackup/properties.py", "davbackup/history.py", "davbackup/retention.py"),
        ("nodes", "node_history", "moments", "props", "props_history"),
    ),
    "versions": (
        ("davbackup/versions.py", "davbackup/chunklists.py"),
        ("versions", "version_chunks", "segments", "segment_chunks", "version_segments"),
    ),
    "chunk index": (("davbackup/chunk_index.py",), ("chunks", "packs", "damaged_chunks")),
    "upload sessions": (("davbackup/upload_sessions.py",), ("upload_sessions", "session_chunks")),
    "users": (("davbackup/users.py",), ("users",)),
    "locks": (("davbackup/locks.py",), ("locks",)),
    "journal": (
        ("davbackup/journal.py", "davbackup/journal_capture.py", "davbackup/journal_replay.py",
         "davbackup/journal_catchup.py", "davbackup/checkpoint.py", "davbackup/journal_pg.py"),
        ("journal_outbox", "journal_packs", "journal_capture", "checkpoint_info"),
    ),
}

#: They create every table and run the schema migrations, which touch all of them.
SCHEMA_MODULES = ("davbackup/catalog.py", "davbackup/catalog_schema.py", "davbackup/catalog_pg.py")

#: (module, table of another concept) -> why the module reads it
READS_ACROSS: dict[tuple[str, str], str] = {
    ("davbackup/tree.py", "versions"): "a node is looked up with its version's size and ETag in one join",
    ("davbackup/tree_bulk.py", "versions"): "the bytes of a large subtree, summed in one recursive query",
    ("davbackup/tree_scan.py", "versions"): "check: files whose version is missing; stats: logical bytes",
    ("davbackup/history.py", "versions"): "the bytes that only history still references",
    ("davbackup/versions.py", "nodes"): "gc deletes a version only once no node references it",
    ("davbackup/versions.py", "node_history"): "gc deletes a version only once no past state references it",
    ("davbackup/versions.py", "chunks"): "the reader's batch of chunks with their places in the packs, in one query;"
                                         " check and recover: referenced chunks missing from the index",
    ("davbackup/chunk_index.py", "version_chunks"): "gc: a chunk a version references is live; stats: unique bytes",
    ("davbackup/chunk_index.py", "session_chunks"): "gc: a chunk an upload session holds is live",
    ("davbackup/users.py", "nodes"): "recover: users whose root folder is missing",
    ("davbackup/upload_sessions.py", "chunks"): "check: chunks of upload sessions missing from the index",
}

#: Modules being reworked on another branch that still touch other concepts' tables:
#: module -> those tables. Empty since catalog_health.py went through the owners; an entry
#: added here is temporary and its SQL is to be moved into the owners' functions.
PENDING: dict[str, set[str]] = {}

#: Modules outside every concept whose SQL names tables computed at run time, which the
#: scanner cannot check: module -> why. (Inside a concept, a computed name is one of its
#: own tables, e.g. live or history nodes, or the table a journal record names.)
COMPUTED_TABLES: dict[str, str] = {
    "davbackup/maintenance/migrate.py": "migrate copies every catalog table, found through sqlite_master, into"
                                        " PostgreSQL in one transaction, row for row (DESIGN.md §7.5)",
    "davbackup/maintenance/migrate_back.py": "migrate --to embedded copies every table back the same way",
}

#: The bundled client keeps its own local state database (davbackup/client/state.py),
#: not the catalog.
NOT_CATALOG = ("davbackup/client/",)

_NAME = r"(?:[a-z_][a-z0-9_]*\.)?([a-z_][a-z0-9_]*)\b(?!\.)"  # a schema prefix (main., cp.) is skipped
_WRITES = re.compile(r"\b(?:INSERT(?: OR [A-Z]+)? INTO|REPLACE INTO|UPDATE(?: OR [A-Z]+)?|DELETE FROM|ALTER TABLE)\s+"
                     + _NAME)
_READS = re.compile(r"\b(?:FROM|JOIN)\s+" + _NAME)
_CREATES = re.compile(r"\bCREATE (?:TABLE|VIEW)(?: IF NOT EXISTS)?\s+" + _NAME)
#: a temporary table is the scratch space of the one module that creates it
_COMPUTED = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE|COPY)\s+\?")
_CREATES_TEMP = re.compile(r"\bCREATE (?:TEMP|TEMPORARY) TABLE(?: IF NOT EXISTS)?\s+" + _NAME)


def sql_texts(source: str) -> list[str]:
    """The string literals of a module that are not docstrings; in an f-string each
    replacement field stands as ``?``."""
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            texts.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            texts.append("".join(v.value if isinstance(v, ast.Constant) else "?" for v in node.values))
    return texts


def table_refs(source: str) -> tuple[set[str], set[str], set[str], set[str]]:
    """(tables written, tables read, tables created, temporary tables created) by a module's SQL."""
    written: set[str] = set()
    read: set[str] = set()
    created: set[str] = set()
    temp: set[str] = set()
    for text in sql_texts(source):
        written.update(_WRITES.findall(text))
        read.update(_READS.findall(text))
        created.update(_CREATES.findall(text))
        temp.update(_CREATES_TEMP.findall(text))
    return written, read, created, temp


def modules() -> dict[str, str]:
    found = {}
    for top in ("davbackup", "provider"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(NOT_CATALOG):
                found[rel] = path.read_text(encoding="utf-8")
    return found


def owner_of() -> dict[str, str]:
    owners: dict[str, str] = {}
    for concept, (_mods, tables) in CONCEPTS.items():
        for table in tables:
            assert table not in owners, f"{table} is owned by both {owners[table]} and {concept}"
            owners[table] = concept
    return owners


def concept_of(module: str) -> str | None:
    return next((c for c, (mods, _tables) in CONCEPTS.items() if module in mods), None)


def test_the_scanner_finds_reads_writes_and_tables():
    source = '''
def f(conn):
    """Docstrings are prose: DELETE FROM users is not a statement here."""
    conn.execute("DELETE FROM chunks WHERE id IN (SELECT chunk_id FROM session_chunks)")
    conn.execute(f"UPDATE OR IGNORE main.nodes SET x=1 WHERE id IN ({ids})")
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)"
                 " ON CONFLICT(key) DO UPDATE SET value=excluded.value")
    conn.execute("SELECT v.size FROM nodes n JOIN versions v ON v.id = n.version_id")
    conn.execute("CREATE TABLE IF NOT EXISTS kept(a)")
    conn.execute("CREATE TEMP TABLE scratch(a)")
    conn.execute(f"CREATE TABLE cp.{table} AS SELECT * FROM main.{table}")
'''
    written, read, created, temp = table_refs(source)
    assert written == {"chunks", "nodes", "meta"}
    assert read == {"chunks", "session_chunks", "nodes", "versions"}
    assert created == {"kept"}
    assert temp == {"scratch"}


def test_every_table_has_one_owning_concept():
    owners = owner_of()
    created: set[str] = set()
    for source in modules().values():
        created |= table_refs(source)[2]
    assert sorted(created - set(owners)) == [], "tables without an owner in CONCEPTS"
    for concept, (mods, _tables) in CONCEPTS.items():
        for module in mods:
            assert (ROOT / module).is_file(), f"{concept}: {module} does not exist"


def test_no_module_touches_a_table_it_does_not_own():
    owners = owner_of()
    sources = modules()
    scratch = {table: module for module, source in sources.items() for table in table_refs(source)[3]}
    problems: list[str] = []
    used_across: set[tuple[str, str]] = set()
    used_pending: set[tuple[str, str]] = set()
    for module, source in sources.items():
        if module in SCHEMA_MODULES:
            continue
        concept = concept_of(module)
        written, read, _created, _temp = table_refs(source)
        for kind, tables in (("writes", written), ("reads", read)):
            for table in sorted(tables):
                if table in scratch and table not in owners:
                    if scratch[table] != module:
                        problems.append(f"{module} {kind} {table}, the scratch table of {scratch[table]}")
                    continue
                owner = owners.get(table)
                if owner is None or owner == concept:
                    continue  # a common table expression, a system table, or its own
                if table in PENDING.get(module, set()):
                    used_pending.add((module, table))
                elif kind == "reads" and (module, table) in READS_ACROSS:
                    used_across.add((module, table))
                else:
                    problems.append(f"{module} {kind} {table}, which {owner} owns ({', '.join(CONCEPTS[owner][0])})")
    assert problems == [], "\n".join(problems)
    assert sorted(set(READS_ACROSS) - used_across) == [], "READS_ACROSS entries nothing needs any more"
    pending = {(m, t) for m, tables in PENDING.items() for t in tables}
    assert sorted(pending - used_pending) == [], "PENDING entries nothing needs any more"


def test_maintenance_provider_and_cli_hold_no_sql_of_their_own():
    owners = owner_of()
    for module, source in modules().items():
        if module.startswith(("davbackup/maintenance/", "davbackup/cli/", "provider/")) and module not in PENDING:
            written, read, _created, _temp = table_refs(source)
            assert (written | read) & set(owners) == set(), module


def test_sql_on_computed_tables_outside_the_owners_is_listed():
    """A table name computed at run time (an f-string) hides the table from the scanner;
    outside the owning concepts and the schema modules that is allowed only where
    COMPUTED_TABLES says why."""
    assert _COMPUTED.search("SELECT ? FROM ??") and not _COMPUTED.search("SELECT x FROM nodes WHERE id=?")
    found = {
        module
        for module, source in modules().items()
        if concept_of(module) is None and module not in SCHEMA_MODULES
        and any(_COMPUTED.search(text) for text in sql_texts(source))
    }
    assert found == set(COMPUTED_TABLES)
