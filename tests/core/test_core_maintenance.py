"""maintenance/: check, gc and stats against real repositories."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from davbackup.errors import Locked
from davbackup.maintenance.check import check_repository
from davbackup.maintenance.gc import collect_garbage
from davbackup.maintenance.stats import repository_stats
from davbackup.pack import HEADER_SIZE
from davbackup.repository import Repository
from davbackup.retention import RetentionPolicy, save_policy
from tests.core_fixtures import (
    PASSPHRASE,
    USER,
    count_chunks,
    flip_byte,
    init_repo,
    read_file,
    version_chunk_ids,
    write_file,
)

FILES = {f"/f{i:02d}.bin": random.Random(i).randbytes(60_000 + 7_000 * i) for i in range(16)}


def pack_bytes(repo: Repository) -> int:
    return sum(repo.storage.size(n) for n in repo.storage.names())


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    """A repository whose retention keeps no history: what a test deletes or
    overwrites is garbage at once (history's own gc tests are in test_core_history)."""
    d = tmp_path / "repo"
    repo = init_repo(d, small=True)
    save_policy(repo.catalog, RetentionPolicy(0, 0, 0))
    ns = repo.namespace(USER)
    for path, data in FILES.items():
        write_file(ns, path, data, piece=10_000)
    repo.close()
    return d


def open_repo(repo_dir: Path, mode: str = "rw") -> Repository:
    return Repository.open(repo_dir, PASSPHRASE, mode=mode)


def test_check_clean_repository(repo_dir: Path) -> None:
    with open_repo(repo_dir, "read") as repo:
        for read_data in (False, True):
            report = check_repository(repo, read_data=read_data)
            assert report.ok, report.problems
            assert report.files == len(FILES)
            assert report.chunks == count_chunks(repo)
        assert report.chunks_verified == report.chunks


def test_check_read_data_reports_tampering(repo_dir: Path) -> None:
    with open_repo(repo_dir, "read") as repo:
        cid = version_chunk_ids(repo, repo.namespace(USER), "/f05.bin")[1]
        loc = repo.chunks.locate(cid)
        assert loc is not None
        flip_byte(repo.storage.path(repo.chunks.pack_name(loc.pack_id)), loc.offset + HEADER_SIZE + 10)
        assert check_repository(repo, read_data=False).ok
        report = check_repository(repo, read_data=True)
        assert not report.ok
        assert len(report.problems) == 1
        assert cid.hex()[:16] in report.problems[0] and "/f05.bin" in report.problems[0]


def test_check_reports_catalog_damage(repo_dir: Path) -> None:
    with open_repo(repo_dir, "read") as repo:
        cid = version_chunk_ids(repo, repo.namespace(USER), "/f03.bin")[0]
        name = repo.catalog.reader().execute("SELECT name FROM packs ORDER BY id").fetchone()[0]  # a chunk pack
    conn = sqlite3.connect(repo_dir / "catalog.sqlite")
    conn.execute("DELETE FROM chunks WHERE id=?", (cid,))
    conn.commit()
    conn.close()
    (repo_dir / "packs" / "ff").mkdir(exist_ok=True)
    (repo_dir / "packs" / "ff" / ("ff" * 16 + ".pack")).write_bytes(b"DAVBPAK1")
    with open_repo(repo_dir, "read") as repo:
        report = check_repository(repo)
        assert any("/f03.bin" in p and "missing from the index" in p for p in report.problems), report.problems
        assert any("ff" * 16 in w for w in report.warnings)
        repo.storage.path(name).unlink()
        report = check_repository(repo)
        assert any(name in p and "missing" in p for p in report.problems)


def test_gc_after_deletes_reclaims_space(repo_dir: Path) -> None:
    with open_repo(repo_dir) as repo:
        ns = repo.namespace(USER)
        deleted = [p for i, p in enumerate(sorted(FILES)) if i % 4 != 0]
        for path in deleted:
            ns.delete(path)
        ns.copy("/f00.bin", "/f00-copy.bin", overwrite=False)
    before = pack_bytes(repo)  # once closed: an open pack has zeros written ahead (DESIGN §8)
    with open_repo(repo_dir, "admin") as admin:
        report = collect_garbage(admin, grace_seconds=None)  # no server: grace 0
        assert report.grace_seconds == 0
        assert report.chunks_deleted > 0
        assert report.packs_deleted + report.packs_rewritten > 0
        assert report.bytes_before == before
        assert report.bytes_after == pack_bytes(admin)
        kept = sum(len(FILES[p]) for p in FILES if p not in deleted)
        assert report.bytes_after < before * 0.6
        assert report.bytes_after >= kept  # random data: no compression
        assert report.unreadable_chunks == 0
        assert check_repository(admin, read_data=True).ok
        conn = admin.catalog.reader()
        unreferenced = conn.execute(
            "SELECT count(*) FROM versions v WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.version_id = v.id)"
        ).fetchone()[0]
        assert unreferenced == 0, "gc left versions that no file uses"
        dangling = conn.execute(
            "SELECT count(*) FROM version_chunks vc WHERE NOT EXISTS (SELECT 1 FROM versions v WHERE v.id = vc.version_id)"
        ).fetchone()[0]
        assert dangling == 0
        again = collect_garbage(admin)
        assert again.chunks_deleted == 0 and again.bytes_freed == 0
    with open_repo(repo_dir, "read") as repo:
        ns = repo.namespace(USER)
        for path, data in FILES.items():
            if path not in deleted:
                assert read_file(ns, path) == data
        assert read_file(ns, "/f00-copy.bin") == FILES["/f00.bin"]


def test_gc_in_process_then_store_the_same_content_again(repo_dir: Path) -> None:
    with open_repo(repo_dir) as repo:
        ns = repo.namespace(USER)
        for path in list(FILES)[:8]:
            ns.delete(path)
        collect_garbage(repo, grace_seconds=0)
        for path in list(FILES)[:8]:  # the same chunks again: their index rows are gone
            write_file(ns, path, FILES[path])
        for path, data in FILES.items():
            assert read_file(ns, path) == data
        report = check_repository(repo, read_data=True)
        assert report.ok, report.problems


def test_reads_after_gc_moved_the_chunks_they_read_before(repo_dir: Path) -> None:
    """The chunk store remembers where it read each chunk; gc rewrites packs under it
    (same process) and the next reads find the chunks at their new places."""
    with open_repo(repo_dir) as repo:
        ns = repo.namespace(USER)
        for path, data in FILES.items():
            assert read_file(ns, path) == data  # every chunk's place remembered
        deleted = [p for i, p in enumerate(sorted(FILES)) if i % 4 != 0]
        for path in deleted:
            ns.delete(path)
        packs_before = set(repo.storage.names())
        report = collect_garbage(repo, grace_seconds=0)
        assert report.packs_rewritten > 0 and not packs_before <= set(repo.storage.names())
        for path, data in FILES.items():
            if path not in deleted:
                assert read_file(ns, path) == data
        assert check_repository(repo, read_data=True).ok


def test_gc_grace_keeps_recent_garbage(repo_dir: Path) -> None:
    with open_repo(repo_dir) as repo:
        repo.namespace(USER).delete("/f01.bin")
        chunks = count_chunks(repo)
        report = collect_garbage(repo, grace_seconds=3600)
        assert report.chunks_deleted == 0 and count_chunks(repo) == chunks
        report = collect_garbage(repo, grace_seconds=0)
        assert report.chunks_deleted > 0


def test_gc_reports_damaged_chunks_and_keeps_them(repo_dir: Path) -> None:
    with open_repo(repo_dir) as repo:
        ns = repo.namespace(USER)
        victim = version_chunk_ids(repo, ns, "/f15.bin")[0]
        loc = repo.chunks.locate(victim)
        assert loc is not None
        pack = repo.chunks.pack_name(loc.pack_id)
        # make the victim's pack mostly garbage so gc wants to rewrite it
        for path in FILES:
            if path != "/f15.bin":
                ns.delete(path)
        flip_byte(repo.storage.path(pack), loc.offset + HEADER_SIZE + 1)
    with open_repo(repo_dir, "admin") as admin:
        report = collect_garbage(admin, grace_seconds=0, rewrite_threshold=1.01)
        assert report.unreadable_chunks >= 1
        assert admin.chunks.locate(victim) is not None
        problems = check_repository(admin, read_data=True).problems
        assert any(victim.hex()[:16] in p for p in problems)


def test_only_one_gc_at_a_time(repo_dir: Path) -> None:
    import fcntl
    import os

    with open_repo(repo_dir, "admin") as admin:
        fd = os.open(repo_dir / "gc.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(Locked):
                collect_garbage(admin)
        finally:
            os.close(fd)


def test_gc_spares_a_pack_a_live_writer_just_created(repo_dir: Path) -> None:
    """A pack file the catalog does not know yet must survive a gc run beside a live writer.

    Writers now register a pack before creating its file, so an unknown file is normally
    gc's own debris; but a file younger than the grace period is spared all the same
    (before the fix, gc deleted such a file while the writer was about to append
    acknowledged chunks to it).
    """
    with open_repo(repo_dir) as server:
        name = "ab" * 16
        appender = server.storage.create(name)  # the window inside ChunkStore._active_pack
        appender.append(b"\x00" * 100)
        appender.sync()
        with open_repo(repo_dir, "admin") as admin:
            assert admin.writer_active()
            collect_garbage(admin)
        assert server.storage.path(name).exists(), "gc deleted the pack a live writer is about to register"
        appender.close()


def test_stats(repo_dir: Path) -> None:
    with open_repo(repo_dir) as repo:
        ns = repo.namespace(USER)
        ns.copy("/f00.bin", "/dup.bin", overwrite=False)
        s0 = repository_stats(repo)
        text = b"".join(b"2024-06-01 12:00:%06d GET /index.html 200\n" % i for i in range(20_000))
        write_file(ns, "/log.txt", text)
        s1 = repository_stats(repo)
    logical = sum(len(d) for d in FILES.values()) + len(FILES["/f00.bin"])
    assert s0.users == 1 and s0.files == len(FILES) + 1 and s0.folders == 0
    assert s0.logical_bytes == logical
    assert s0.unique_bytes == logical - len(FILES["/f00.bin"])  # the copy adds nothing
    assert s0.dedup_ratio == pytest.approx(logical / s0.unique_bytes)
    assert s0.chunk_count > len(FILES)
    assert s0.stored_bytes >= s0.chunk_stored_bytes
    assert s0.pack_count >= 1 and s0.open_sessions == 0
    assert s0.compression_ratio < 1.0  # random data: headers and tags only cost
    assert s1.logical_bytes == logical + len(text)
    assert s1.unique_bytes == s0.unique_bytes + len(text)
    assert s1.compression_ratio > 1.05
