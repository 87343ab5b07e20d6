"""The metadata journal and `recover` at the core level (DESIGN.md §20).

The HTTP-level tests (a randomized workload, SIGKILL) are in ``tests/provider/test_provider_recover.py``;
these pin the pieces: the catalog tables come back row for row, a schema-3 repository
(a fixture made by the release before the journal) gets its first checkpoint and is
then recoverable, gc compacts the journal without losing anything, outbox records
synced twice are harmless, a damaged record is reported, and the server's start-up
check names `davbackup recover`.
"""

from __future__ import annotations

import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from davbackup.catalog_health import check_file, check_rows
from davbackup.errors import CatalogDamaged, NotFound, UsageError
from davbackup.journal import TYPE_JOURNAL
from davbackup.journal_capture import DURABLE_TABLES
from davbackup.maintenance.check import check_repository
from davbackup.maintenance.gc import collect_garbage
from davbackup.maintenance.recover import RecoverReport, catalog_files, recover
from davbackup.pack import scan_pack
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, USER, USER_PASSWORD, init_repo, read_file, write_file

FIXTURES = Path(__file__).parents[1] / "fixtures"


def dump(repo: Repository) -> dict[str, list[tuple[object, ...]]]:
    conn = repo.catalog.reader()
    out = {}
    for table in DURABLE_TABLES:
        rowid = "rowid, " if table in ("node_history", "props_history") else ""
        where = " WHERE key NOT LIKE 'journal%'" if table == "meta" else ""
        out[table] = sorted(conn.execute(f"SELECT {rowid}* FROM {table}{where}").fetchall(), key=repr)
    return out


def run_recover(root: Path, passphrase: str = PASSPHRASE, *, force: bool = False) -> RecoverReport:
    location, config, master = Repository.unlock(root, passphrase)
    storage = location.storage()
    try:
        return recover(root, storage, master, force=force, progress=lambda _text: None,
                       open_repo=lambda path: Repository(root, config, master, "admin", location, catalog_path=path))
    finally:
        storage.close()


def lose_catalog(root: Path) -> None:
    for p in catalog_files(root / "catalog.sqlite"):
        p.unlink(missing_ok=True)


def busy_repo(root: Path) -> Repository:
    repo = init_repo(root)
    busy_workload(repo)
    return repo


def busy_workload(repo: Repository) -> None:
    """Every kind of durable change: users, quota, folders, versions, properties, COPY, MOVE, DELETE."""
    repo.users.add("bob", "bob-password-1", quota=10**8)
    ns = repo.namespace(USER)
    ns.mkdir("/docs")
    write_file(ns, "/docs/a.txt", b"one")
    write_file(ns, "/docs/a.txt", b"two")
    write_file(ns, "/docs/big.bin", os.urandom(3 * 1024 * 1024))
    ns.set_prop("/docs/a.txt", "{urn:x}colour", "blue")
    ns.copy("/docs", "/docs2", overwrite=False)
    ns.move("/docs2/a.txt", "/moved.txt", overwrite=False)
    ns.delete("/docs2")
    repo.users.set_quota(USER, 10**9)


def test_recover_restores_every_durable_row(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    with busy_repo(root) as repo:
        before = dump(repo)
    lose_catalog(root)
    report = run_recover(root)
    assert report.problems == []
    assert report.users == 2 and report.files == 3
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert dump(repo) == before
        ns = repo.namespace(USER)
        assert read_file(ns, "/docs/a.txt") == b"two"
        assert ns.get_props("/docs/a.txt")["{urn:x}colour"] == "blue"
        assert repo.users.verify(USER, USER_PASSWORD) is not None
        assert check_repository(repo, read_data=True).ok


def test_recover_never_overwrites_without_force(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    busy_repo(root).close()
    original = (root / "catalog.sqlite").read_bytes()
    with pytest.raises(UsageError, match="--force"):
        run_recover(root)
    assert (root / "catalog.sqlite").read_bytes() == original
    report = run_recover(root, force=True)
    assert report.moved_aside is not None and report.moved_aside.read_bytes() == original


def test_schema3_repository_gets_a_checkpoint_and_becomes_recoverable(tmp_path: Path) -> None:
    with tarfile.open(FIXTURES / "repo_schema3.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "repo"
    passphrase = "fixture passphrase v3"
    with Repository.open(root, passphrase) as repo:
        conn = repo.catalog.reader()
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("4",)
        assert conn.execute("SELECT count(*) FROM journal_packs WHERE kind='checkpoint'").fetchone() == (1,)
        before = dump(repo)
    lose_catalog(root)
    report = run_recover(root, passphrase)
    assert report.problems == [] and report.checkpoint_seq == 0
    with Repository.open(root, passphrase) as repo:
        assert dump(repo) == before
        ns = repo.namespace("alice")
        assert read_file(ns, "/docs/a.txt") == b"third version of a\n"
        assert read_file(ns, "/docs/b.bin") == bytes(range(256)) * 4000
        versions = ns.history().versions("/docs/a.txt")
        assert [ns.history().open_version("/docs/a.txt", v.name).read() for v in versions] == [
            b"first version of a\n", b"second version of a\n", b"third version of a\n"]
        assert repo.users.usage("alice")[1] == 10**9
        assert repo.users.get("bob").role == "ro"
        assert repo.users.verify("bob", "bob-password-3") is not None
        assert check_repository(repo, read_data=True).ok


def test_gc_checkpoint_compacts_the_journal(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    with busy_repo(root) as repo:
        journal_before = {r[0] for r in repo.catalog.reader().execute("SELECT name FROM journal_packs")}
    with Repository.open(root, PASSPHRASE, mode="admin") as admin:
        report = collect_garbage(admin)
        assert report.journal_packs_deleted >= len(journal_before) - 1
        names = {r[0] for r in admin.catalog.reader().execute("SELECT name FROM journal_packs")}
        assert not journal_before & names - {None}
    with Repository.open(root, PASSPHRASE) as repo:  # records after the checkpoint
        ns = repo.namespace(USER)
        write_file(ns, "/after-gc.txt", b"after")
        before = dump(repo)
    lose_catalog(root)
    report = run_recover(root)
    assert report.problems == [] and report.checkpoint_seq and report.records_applied >= 1
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert dump(repo) == before
        assert read_file(repo.namespace(USER), "/after-gc.txt") == b"after"


def test_outbox_records_synced_twice_are_replayed_once(tmp_path: Path) -> None:
    """An admin process commits first and then syncs its records, keeping them in the
    outbox meanwhile (the server syncs before COMMIT and needs none)."""
    root = tmp_path / "repo"
    with busy_repo(root) as repo:
        write_file(repo.namespace(USER), "/x", b"x")
        assert repo.catalog.reader().execute("SELECT count(*) FROM journal_outbox").fetchone()[0] == 0
    with Repository.open(root, PASSPHRASE, mode="admin") as admin:
        admin.users.add("dave", "dave-password-1")
        # as if the process died before deleting its outbox rows: the next open syncs them again
        admin.journal._flushed = 0  # type: ignore[union-attr]
        assert admin.catalog.reader().execute("SELECT count(*) FROM journal_outbox").fetchone()[0] >= 1
        before = dump(admin)
    with Repository.open(root, PASSPHRASE) as repo:
        assert repo.catalog.reader().execute("SELECT count(*) FROM journal_outbox").fetchone()[0] == 0
    lose_catalog(root)
    report = run_recover(root)
    assert report.problems == [] and report.records > report.records_applied, report  # a copy, applied once
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert dump(repo) == before
        assert repo.users.verify("dave", "dave-password-1") is not None


def test_a_damaged_journal_record_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    with busy_repo(root) as repo:
        names = [r[0] for r in repo.catalog.reader().execute("SELECT name FROM journal_packs WHERE kind='journal'")]
        storage = repo.storage
        path = storage.path(names[0])  # type: ignore[attr-defined]
    with open(path, "rb") as f:
        blobs = [b for b in scan_pack(f) if b.header.blob_type == TYPE_JOURNAL]
    with open(path, "r+b") as f:
        f.seek(blobs[-1].offset + blobs[-1].total_len - 3)
        f.write(b"\xff\xff\xff")
    lose_catalog(root)
    report = run_recover(root)
    assert any("cannot be read" in p for p in report.problems), report.problems


def test_start_up_check_names_recover(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    busy_repo(root).close()
    path = root / "catalog.sqlite"
    check_file(path)
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        check_rows(path, repo.catalog.reader(), repo.tree)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE nodes SET name_enc = (SELECT name_enc FROM nodes WHERE id = 1) WHERE id = (SELECT max(id) FROM nodes)")
    conn.commit()
    conn.close()
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        with pytest.raises(CatalogDamaged, match="davbackup recover"):
            check_rows(path, repo.catalog.reader(), repo.tree)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(CatalogDamaged, match="davbackup recover"):
        check_file(path)
    lose_catalog(root)
    with pytest.raises(CatalogDamaged, match="davbackup recover"):
        check_file(path)


def test_a_record_of_a_failed_commit_is_superseded(tmp_path: Path) -> None:
    """The server appends a batch's records before COMMIT (§20.2): when the COMMIT
    fails, that record stays in the pack with the sequence number the next committed
    record takes; recovery follows the later epoch."""
    root = tmp_path / "repo"
    with busy_repo(root) as repo:
        ns = repo.namespace(USER)
        fail = [True]

        def hook() -> None:
            if fail and fail.pop():
                raise sqlite3.OperationalError("injected: COMMIT fails after the journal append")

        repo.catalog.fault_hook = hook
        with pytest.raises(Exception, match="injected"):
            write_file(ns, "/never.txt", b"never committed")
        seq_before = repo.catalog.reader().execute("SELECT value FROM meta WHERE key='journal_seq'").fetchone()
        write_file(ns, "/real.txt", b"committed")
        before = dump(repo)
    lose_catalog(root)
    report = run_recover(root)
    assert report.problems == [] and report.superseded == 1, (report.problems, seq_before)
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert dump(repo) == before
        ns = repo.namespace(USER)
        assert read_file(ns, "/real.txt") == b"committed"
        with pytest.raises(NotFound):
            ns.stat("/never.txt")


def test_a_damaged_chunk_and_a_torn_pack_are_reported_not_indexed(tmp_path: Path) -> None:
    """Recovery checks each chunk blob's tag as it reads the packs once: a damaged one
    is not indexed and the version that needs it is named; a pack whose magic was
    never fully written (a crash or a full disk at its creation) is an empty pack."""
    root = tmp_path / "repo"
    with busy_repo(root) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/victim.txt", b"a chunk that will be damaged " * 100)
        cid, pack, offset, length = repo.catalog.reader().execute(
            "SELECT c.id, p.name, c.offset, c.stored_len FROM version_chunks vc JOIN chunks c ON c.id = vc.chunk_id"
            " JOIN packs p ON p.id = c.pack_id WHERE vc.version_id = (SELECT max(id) FROM versions)").fetchone()
        path = repo.storage.path(pack)  # type: ignore[attr-defined]
        torn = repo.storage.path("00" * 16)  # type: ignore[attr-defined]
    with open(path, "r+b") as f:
        f.seek(offset + 64 + length // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(b"DAVB")
    lose_catalog(root)
    report = run_recover(root)
    assert report.damaged_chunks == 1
    assert any("1 damaged chunk blobs were not indexed" in p for p in report.problems), report.problems
    assert any("1 file versions need chunks found in no pack" in p for p in report.problems), report.problems
    assert not any("00" * 16 in p for p in report.problems), report.problems
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert repo.catalog.reader().execute("SELECT 1 FROM chunks WHERE id = ?", (cid,)).fetchone() is None
        assert read_file(repo.namespace(USER), "/docs/a.txt") == b"two"


def test_a_damaged_blob_header_is_reported_a_zero_tail_is_not(tmp_path: Path) -> None:
    """A blob header that does not parse ends the walk of its pack (what follows cannot
    be placed) and is reported with its offset; zeros after the last blob are bytes a
    failed fsync lost, a torn tail, and say nothing."""
    root = tmp_path / "repo"
    with busy_repo(root) as repo:
        write_file(repo.namespace(USER), "/victim.txt", b"a chunk whose header will be damaged " * 100)
        pack, offset = repo.catalog.reader().execute(
            "SELECT p.name, c.offset FROM version_chunks vc JOIN chunks c ON c.id = vc.chunk_id"
            " JOIN packs p ON p.id = c.pack_id WHERE vc.version_id = (SELECT max(id) FROM versions)").fetchone()
        other = repo.catalog.reader().execute("SELECT name FROM journal_packs WHERE kind='journal'").fetchone()[0]
        path, other_path = (repo.storage.path(n) for n in (pack, other))  # type: ignore[attr-defined]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"XXXX")  # the blob magic
    with open(other_path, "ab") as f:
        f.write(bytes(200))
    lose_catalog(root)
    report = run_recover(root)
    assert f"pack {pack}: damaged blob header at offset {offset}; the rest of the pack was not read" in report.problems
    assert any("1 file versions need chunks found in no pack" in p for p in report.problems), report.problems
    assert not any(other in p for p in report.problems), report.problems
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert read_file(repo.namespace(USER), "/docs/a.txt") == b"two"
