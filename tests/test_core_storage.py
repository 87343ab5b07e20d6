"""storage.py: the pack-storage guarantees listed in its docstring, for LocalPackStorage.

Written against the ``PackStorage`` protocol through the ``storage`` fixture, so that a
second backend can be added to its params and run the same checks.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from davbackup.pack import PACK_MAGIC
from davbackup.storage import LocalPackStorage, PackMissing


@pytest.fixture(params=["local"])
def storage(request: pytest.FixtureRequest, tmp_path: Path):
    s = LocalPackStorage(tmp_path / "packs")
    yield s
    s.close()


def test_create_starts_with_magic_and_refuses_existing_name(storage) -> None:
    a = storage.create("ab" + "0" * 30)
    assert a.size == len(PACK_MAGIC)
    a.close()
    assert storage.read("ab" + "0" * 30, 0, len(PACK_MAGIC)) == PACK_MAGIC
    with pytest.raises(FileExistsError):
        storage.create("ab" + "0" * 30)


def test_append_returns_offsets_and_is_readable_at_once(storage) -> None:
    name = "cd" + "1" * 30
    a = storage.create(name)
    offsets = [a.append(bytes([i]) * (100 + i)) for i in range(10)]
    expected = len(PACK_MAGIC)
    for i, off in enumerate(offsets):
        assert off == expected
        assert storage.read(name, off, 100 + i) == bytes([i]) * (100 + i)  # before any sync
        expected += 100 + i
    assert a.size == expected
    a.sync()
    a.close()
    assert storage.size(name) == expected


def test_read_errors(storage) -> None:
    with pytest.raises(PackMissing):
        storage.read("ee" + "2" * 30, 0, 1)
    with pytest.raises(PackMissing):
        storage.size("ee" + "2" * 30)
    with pytest.raises(PackMissing):
        storage.open_stream("ee" + "2" * 30)
    name = "ef" + "3" * 30
    a = storage.create(name)
    a.append(b"x" * 10)
    a.close()
    with pytest.raises(EOFError):
        storage.read(name, len(PACK_MAGIC) + 5, 10)


def test_names_and_delete(storage) -> None:
    names = sorted(f"{i:02x}" + "4" * 30 for i in range(0, 256, 37))
    for n in names:
        storage.create(n).close()
    assert sorted(storage.names()) == names
    storage.read(names[0], 0, 8)  # cache a read handle, then delete
    storage.delete(names[0])
    assert sorted(storage.names()) == names[1:]
    with pytest.raises(PackMissing):
        storage.read(names[0], 0, 8)
    storage.delete(names[0])  # idempotent


def test_concurrent_appends_do_not_interleave(storage) -> None:
    name = "aa" + "5" * 30
    a = storage.create(name)
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(50):
            data = bytes([k]) * (1000 + i)
            off = a.append(data)
            a.sync(off + len(data))
            with lock:
                results.append((off, data))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    results.sort()
    pos = len(PACK_MAGIC)
    for off, data in results:
        assert off == pos
        assert storage.read(name, off, len(data)) == data
        pos += len(data)
    assert storage.size(name) == pos


def test_handle_cache_is_bounded(tmp_path: Path) -> None:
    s = LocalPackStorage(tmp_path / "packs", max_open=4)
    names = [f"{i:02x}" + "6" * 30 for i in range(20)]
    for n in names:
        s.create(n).close()
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        for n in names:
            assert s.read(n, 0, 8) == PACK_MAGIC
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 4
    s.close()
