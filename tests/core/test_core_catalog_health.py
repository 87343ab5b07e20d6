"""The server's start-up check of an SQLite catalog (davbackup/catalog_health.py, DESIGN.md §20.6).

Each way a catalog can be refused, with the detail the error gives and the command it
names; a healthy catalog passes both halves. (The damaged-name and truncated-file
cases after a recover are in test_core_recover.py.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from davbackup.catalog import SCHEMA_VERSION
from davbackup.catalog_health import SAMPLE, check_file, check_rows
from davbackup.errors import CatalogDamaged
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, USER, init_repo, write_file


def make_repo(root: Path) -> Path:
    with init_repo(root) as repo:
        ns = repo.namespace(USER)
        ns.mkdir("/d")
        write_file(ns, "/d/a.txt", b"a")
    return root / "catalog.sqlite"


def edit(path: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def rows_check(root: Path) -> None:
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        check_rows(repo.catalog.path, repo.catalog.reader(), repo.tree)


def test_a_healthy_catalog_passes(tmp_path: Path) -> None:
    path = make_repo(tmp_path / "repo")
    check_file(path)
    rows_check(tmp_path / "repo")


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (None, "no schema version"),
        ("four", "schema version 'four' is not a number"),
        ("0", "schema version 0 is not one this davbackup knows"),
        (str(SCHEMA_VERSION + 1), f"schema version {SCHEMA_VERSION + 1} is not one this davbackup knows"),
    ],
)
def test_a_schema_version_it_cannot_open_is_refused(tmp_path: Path, value: str | None, detail: str) -> None:
    path = make_repo(tmp_path / "repo")
    if value is None:
        edit(path, "DELETE FROM meta WHERE key='schema_version'")
    else:
        edit(path, "UPDATE meta SET value=? WHERE key='schema_version'", value)
    with pytest.raises(CatalogDamaged, match="davbackup recover") as caught:
        check_file(path)
    assert detail in caught.value.message


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = make_repo(tmp_path / "repo")
    for p in path.parent.glob("catalog.sqlite*"):
        p.unlink()
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(CatalogDamaged, match="the catalog is damaged") as caught:
        check_file(path)
    assert f"--repo {path.parent} --force" in caught.value.message


def test_a_missing_catalog_names_recover_without_force(tmp_path: Path) -> None:
    path = make_repo(tmp_path / "repo")
    for p in path.parent.glob("catalog.sqlite*"):
        p.unlink()
    with pytest.raises(CatalogDamaged, match="the catalog is missing") as caught:
        check_file(path)
    assert caught.value.message.endswith(f"`davbackup recover --repo {path.parent}`")


@pytest.mark.parametrize("how", ["missing", "a file", "not a root"])
def test_a_user_without_a_root_folder_is_refused(tmp_path: Path, how: str) -> None:
    root = tmp_path / "repo"
    path = make_repo(root)
    conn = sqlite3.connect(path)
    root_id, file_id = conn.execute(
        "SELECT u.root_id, (SELECT id FROM nodes WHERE is_dir=0 LIMIT 1) FROM users u WHERE u.name=?", (USER,)
    ).fetchone()
    conn.close()
    if how == "missing":
        edit(path, "UPDATE users SET root_id=? WHERE name=?", 10**9, USER)
        bad = 10**9
    elif how == "a file":
        edit(path, "UPDATE users SET root_id=? WHERE name=?", file_id, USER)
        bad = file_id
    else:
        folder = sqlite3.connect(path).execute("SELECT id FROM nodes WHERE is_dir=1 AND parent_id=?", (root_id,)).fetchone()[0]
        edit(path, "UPDATE users SET root_id=? WHERE name=?", folder, USER)
        bad = folder
    with pytest.raises(CatalogDamaged, match="davbackup recover") as caught:
        rows_check(root)
    assert f"user {USER}: root folder {bad} is missing or not a root folder" in caught.value.message


def test_only_the_newest_names_are_sampled(tmp_path: Path) -> None:
    """A name swapped onto the oldest non-root node is outside the sample once SAMPLE newer
    nodes exist; swapped onto the newest it is found."""
    root = tmp_path / "repo"
    with init_repo(root) as repo:
        ns = repo.namespace(USER)
        ns.mkdir("/old")
        for i in range(SAMPLE):
            ns.mkdir(f"/n{i}")
    path = root / "catalog.sqlite"
    conn = sqlite3.connect(path)
    old = conn.execute("SELECT min(id) FROM nodes WHERE parent_id IS NOT NULL").fetchone()[0]
    newest = conn.execute("SELECT max(id) FROM nodes").fetchone()[0]
    conn.close()
    edit(path, "UPDATE nodes SET name_enc=(SELECT name_enc FROM nodes WHERE id=?) WHERE id=?", newest - 1, old)
    rows_check(root)
    edit(path, "UPDATE nodes SET name_enc=(SELECT name_enc FROM nodes WHERE id=?) WHERE id=?", newest - 1, newest)
    with pytest.raises(CatalogDamaged, match="davbackup recover"):
        rows_check(root)
