"""chunkstore.py and writer.py: packs roll over and get sealed, pending chunks dedup."""

from __future__ import annotations

import random
from pathlib import Path

from davbackup import chunk_index
from davbackup.chunkstore import ChunkBatch
from davbackup.maintenance.gc import collect_garbage
from davbackup.pack import HEADER_SIZE
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, USER, count_chunks, count_rows, init_repo, read_file, write_file


# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
CATALOG_BACKENDS = ("sqlite", "postgresql")


def pack_states(repo: Repository) -> dict[str, int]:
    return dict(repo.catalog.reader().execute("SELECT state, count(*) FROM packs GROUP BY state").fetchall())


def test_packs_roll_over_at_target_size_and_get_sealed(small_repo: Repository, small_ns) -> None:
    data = random.Random(1).randbytes(3 * 1024 * 1024)
    write_file(small_ns, "/big", data)
    target = small_repo.config.pack_target_size
    sizes = [small_repo.storage.size(n) for n in small_repo.storage.names()]
    assert len(sizes) >= 3 * 1024 * 1024 // target
    assert all(s < target + 16384 + HEADER_SIZE + 16 for s in sizes)
    states = pack_states(small_repo)
    assert states.get("open", 0) <= 1  # only the active pack stays open
    small_repo.chunks.close()
    assert pack_states(small_repo).get("open", 0) == 0


def test_index_rows_appear_only_at_commit(small_repo: Repository, small_ns) -> None:
    before = count_chunks(small_repo)
    pending = small_ns.open_write("/f")
    pending.write(random.Random(2).randbytes(200_000))
    assert count_chunks(small_repo) == before  # appended to a pack, not yet indexed
    pending.commit()
    assert count_chunks(small_repo) > before


def test_pending_chunks_dedup_between_writers(small_repo: Repository, small_ns) -> None:
    data = random.Random(3).randbytes(150_000)
    p1, p2 = small_ns.open_write("/one"), small_ns.open_write("/two")
    p1.write(data)
    size_after_first = sum(small_repo.storage.size(n) for n in small_repo.storage.names())
    p2.write(data)  # the same chunks, still pending in p1
    assert sum(small_repo.storage.size(n) for n in small_repo.storage.names()) == size_after_first
    p1.abort()  # the first writer goes away: p2 still holds the chunks
    p2.commit()
    assert read_file(small_ns, "/two") == data


def test_put_twice_in_one_batch(small_repo: Repository) -> None:
    batch = ChunkBatch()
    a = small_repo.chunks.put(b"x" * 5000, batch)
    b = small_repo.chunks.put(b"x" * 5000, batch)
    assert a == b and len(batch) == 1
    small_repo.chunks.release(batch)


def test_put_many_answers_as_put_one_at_a_time(small_repo: Repository, small_ns) -> None:
    """put_many (what a writer calls with the chunks of one cut) asks the chunk index
    about them together and decides each chunk as put would: stored -> deduplicated,
    stored but marked damaged -> stored again (self-healing), new -> stored once even
    when it repeats in the list."""
    rng = random.Random(5)
    # at most the minimum chunk size: each is one chunk whatever the repository's seed
    stored, damaged, new = rng.randbytes(600), rng.randbytes(800), rng.randbytes(1000)
    assert len(new) <= small_repo.config.chunker.min_size
    write_file(small_ns, "/stored", stored)
    write_file(small_ns, "/damaged", damaged)
    chunks = small_repo.chunks
    damaged_id = chunks.codec.chunk_id(damaged)
    small_repo.catalog.write(lambda conn: chunk_index.mark_damaged(conn, damaged_id, 0.0, "test"))
    statements: list[str] = []
    reader = small_repo.catalog.reader()
    trace = getattr(reader, "set_trace_callback", None)  # SQLite's; PostgreSQL's reader has none
    if trace is not None:
        trace(statements.append)
    batch = ChunkBatch()
    try:
        refs = chunks.put_many([stored, damaged, new, memoryview(new), stored], batch)
    finally:
        if trace is not None:
            trace(None)
    ids = [chunks.codec.chunk_id(c) for c in (stored, damaged, new)]
    assert [r.chunk_id for r in refs] == [ids[0], ids[1], ids[2], ids[2], ids[0]]
    assert [r.length for r in refs] == [600, 800, 1000, 1000, 600]
    assert batch.existing == {ids[0]}
    assert set(batch.new) == {ids[1], ids[2]}
    if trace is not None:
        assert len([s for s in statements if "damaged_chunks" in s]) == 1
    chunks.release(batch)


def test_recovery_seals_packs_left_open(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", small=True)
    ns = repo.namespace(USER)
    write_file(ns, "/f", random.Random(4).randbytes(100_000))
    assert pack_states(repo).get("open", 0) == 1
    # simulate a crash: drop the process state without close()
    repo.catalog.close()
    repo._release_writer_lock()
    again = Repository.open(tmp_path / "repo", PASSPHRASE)
    try:
        assert pack_states(again).get("open", 0) == 0
        assert read_file(again.namespace(USER), "/f") == random.Random(4).randbytes(100_000)
    finally:
        again.close()


def test_aborted_uploads_leave_garbage_that_gc_reclaims(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", small=True)
    ns = repo.namespace(USER)
    write_file(ns, "/keep", b"k" * 50_000)
    for i in range(5):
        p = ns.open_write(f"/aborted-{i}")
        p.write(random.Random(10 + i).randbytes(120_000))
        p.abort()
    assert count_rows(repo, "chunks") < 20
    repo.close()
    with Repository.open(tmp_path / "repo", PASSPHRASE, mode="admin") as admin:
        before = sum(admin.storage.size(n) for n in admin.storage.names())
        report = collect_garbage(admin)
        assert report.bytes_after < before - 500_000
        assert read_file(admin.namespace(USER), "/keep") == b"k" * 50_000
