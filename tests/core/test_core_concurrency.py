"""Threads against one repository: writers, readers, shared content, group commit."""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor

from davbackup.repository import Repository
from tests.core_fixtures import MiB, count_chunks, read_file, write_file


# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
CATALOG_BACKENDS = ("sqlite", "postgresql")


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_eight_writers_and_readers(repo: Repository, ns) -> None:
    ns.mkdir("/w")
    shared = payload(999, 3 * MiB)  # every writer also stores this block: dedup under contention
    write_file(ns, "/stable.bin", payload(1000, 5 * MiB))
    stable = read_file(ns, "/stable.bin")
    errors: list[BaseException] = []
    stop = threading.Event()
    expected: dict[str, str] = {}
    lock = threading.Lock()

    def writer(tid: int) -> None:
        rng = random.Random(tid)
        for i in range(4):
            data = payload(tid * 100 + i, rng.randrange(1, 3 * MiB)) + shared
            path = f"/w/t{tid}-{i}.bin"
            pending = ns.open_write(path)
            view = memoryview(data)
            step = rng.choice([4096, 65536, 1 << 20])
            for s in range(0, len(data), step):
                pending.write(view[s : s + step])
            pending.commit(expected_size=len(data))
            with lock:
                expected[path] = hashlib.sha256(data).hexdigest()

    def reader() -> None:
        rng = random.Random(threading.get_ident())
        while not stop.is_set():
            with ns.open_read("/stable.bin") as r:
                pos = rng.randrange(len(stable))
                r.seek(pos)
                assert r.read(200_000) == stable[pos : pos + 200_000]
            with lock:
                done = list(expected.items())
            if done:
                path, digest = rng.choice(done)
                assert hashlib.sha256(read_file(ns, path)).hexdigest() == digest
            ns.list("/w")

    def guard(fn, *args):  # type: ignore[no-untyped-def]
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=guard, args=(reader,)) for _ in range(3)]
    writers = [threading.Thread(target=guard, args=(writer, t)) for t in range(8)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    assert len(expected) == 32
    for path, digest in expected.items():
        assert hashlib.sha256(read_file(ns, path)).hexdigest() == digest
    assert len(ns.list("/w")) == 32


def test_same_content_from_many_threads_is_stored_once(small_repo: Repository, small_ns) -> None:
    data = payload(5, 400_000)
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        write_file(small_ns, f"/same-{i}", data, piece=3000 + i)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    ids = {small_ns.stat(f"/same-{i}").etag for i in range(8)}
    assert len(ids) == 1
    n_chunks = count_chunks(small_repo)
    assert n_chunks <= len(data) // 1024
    # every chunk row is unique and all files read back
    for i in range(8):
        assert read_file(small_ns, f"/same-{i}") == data
    # after a reopen (pending state gone) writing the same again adds nothing
    write_file(small_ns, "/again", data)
    assert count_chunks(small_repo) == n_chunks


def test_concurrent_namespace_changes(small_repo: Repository, small_ns) -> None:
    """mkdir/move/delete from several threads: each operation is atomic, the tree stays sane."""
    for i in range(8):
        small_ns.mkdir(f"/d{i}")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(15):
                write_file(small_ns, f"/d{i}/f{k}", f"{i}-{k}".encode())
                if k % 3 == 0:
                    small_ns.move(f"/d{i}/f{k}", f"/d{(i + 1) % 8}/moved-{i}-{k}", overwrite=True)
                if k % 5 == 0:
                    small_ns.copy(f"/d{i}", f"/copy-{i}-{k}", overwrite=True)
                    small_ns.delete(f"/copy-{i}-{k}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(8):
        for k in range(15):
            path = f"/d{(i + 1) % 8}/moved-{i}-{k}" if k % 3 == 0 else f"/d{i}/f{k}"
            assert read_file(small_ns, path) == f"{i}-{k}".encode()
    assert sorted(e.name for e in small_ns.list("/")) == [f"d{i}" for i in range(8)]


def test_offloaded_writes_match_inline_writes(tmp_path) -> None:
    """Large writes go through a helper thread; the result is the same version."""
    import davbackup.writer as writer_module
    from davbackup.repository import Repository

    data = os.urandom(24 * 1024 * 1024)
    repo = Repository.init(tmp_path / "r", "pass")
    try:
        repo.users.add("alice", "password1")
        ns = repo.namespace("alice")
        for name, threshold in (("/offloaded", writer_module.OFFLOAD_AFTER), ("/inline", 1 << 62)):
            old, writer_module.OFFLOAD_AFTER = writer_module.OFFLOAD_AFTER, threshold
            try:
                pending = ns.open_write(name)
                for i in range(0, len(data), 1 << 20):
                    pending.write(data[i : i + (1 << 20)])
                assert pending.received == len(data)
                pending.commit(expected_size=len(data))
            finally:
                writer_module.OFFLOAD_AFTER = old
        assert ns.stat("/offloaded").etag == ns.stat("/inline").etag
        assert ns.open_read("/offloaded").read() == data
        for name, threshold in (("/filled", writer_module.OFFLOAD_AFTER), ("/filled-inline", 1 << 62)):
            old, writer_module.OFFLOAD_AFTER = writer_module.OFFLOAD_AFTER, threshold
            try:  # read straight into the chunker's segments (a large direct PUT)
                pending = ns.open_write(name)
                source = io.BytesIO(data)
                while pending.writer.fill(source.readinto):
                    pass
                assert pending.received == len(data)
                pending.commit(expected_size=len(data))
            finally:
                writer_module.OFFLOAD_AFTER = old
            assert ns.stat(name).etag == ns.stat("/inline").etag
        assert ns.open_read("/filled").read() == data
    finally:
        repo.close()
