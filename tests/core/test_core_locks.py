"""locks.py: persistent WebDAV lock records."""

from __future__ import annotations

from pathlib import Path

from davbackup.locks import LockTable
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, init_repo


# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
CATALOG_BACKENDS = ("sqlite", "postgresql")


def test_put_get_delete(repo: Repository) -> None:
    locks: LockTable = repo.locks
    assert locks.get("opaquelocktoken:1") is None
    record = {"token": "opaquelocktoken:1", "root": "/a", "depth": "infinity", "owner": "<x/> ✓"}
    locks.put("opaquelocktoken:1", "/a", 2e9, record)
    assert locks.get("opaquelocktoken:1") == record
    record2 = dict(record, depth="0")
    locks.put("opaquelocktoken:1", "/a", 2e9, record2)  # refresh replaces
    assert locks.get("opaquelocktoken:1") == record2
    assert len(locks.list()) == 1
    locks.delete("opaquelocktoken:1")
    assert locks.get("opaquelocktoken:1") is None
    locks.delete("opaquelocktoken:1")  # idempotent


def test_list_by_prefix_is_case_sensitive_and_literal(repo: Repository) -> None:
    locks = repo.locks
    roots = ["/alice/Docs", "/alice/docs", "/alice/docs/a", "/alice/docs_x", "/alice/d%cs", "/bob/docs", "/ALICE/docs"]
    for i, root in enumerate(roots):
        locks.put(f"t{i}", root, 2e9, {"root": root})
    got = lambda prefix: sorted(r["root"] for r in locks.list(prefix))  # noqa: E731
    assert got("/alice/docs") == ["/alice/docs", "/alice/docs/a", "/alice/docs_x"]
    assert got("/alice/Docs") == ["/alice/Docs"]
    assert got("/alice/d%") == ["/alice/d%cs"]  # no LIKE wildcards
    assert got("/alice/d_cs") == []
    assert got("/") == sorted(roots[:-1] + ["/ALICE/docs"])
    assert got("/nobody") == []
    assert len(locks.list()) == len(roots)
    assert got("/alice/dócs") == []


def test_delete_expired(repo: Repository) -> None:
    locks = repo.locks
    locks.put("old", "/x", 100.0, {"t": "old"})
    locks.put("edge", "/x", 200.0, {"t": "edge"})
    locks.put("new", "/x", 300.0, {"t": "new"})
    locks.put("forever", "/x", -1.0, {"t": "forever"})  # negative: never expires
    assert locks.delete_expired(200.0) == 1
    assert {r["t"] for r in locks.list()} == {"edge", "new", "forever"}
    assert locks.delete_expired(1e12) == 2
    assert [r["t"] for r in locks.list()] == ["forever"]


def test_locks_survive_restart(tmp_path: Path) -> None:
    first = init_repo(tmp_path / "repo")
    first.locks.put("tok", "/a/b", 2e9, {"k": [1, 2, 3]})
    first.close()
    with Repository.open(tmp_path / "repo", PASSPHRASE, mode="admin") as again:
        assert again.locks.get("tok") == {"k": [1, 2, 3]}
