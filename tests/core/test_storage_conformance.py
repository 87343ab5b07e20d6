"""The pack-storage guarantees (davbackup/storage.py docstring, DESIGN.md §6), checked
for every backend by one set of tests: the local directory, and S3 on a real Ceph
RADOS Gateway without and with the local pack cache.

"Another instance" below is a second storage object on the same packs with no state
shared with the first: what a freshly started process, or another node, sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from davbackup.pack import PACK_MAGIC
from davbackup.storage import PackMissing
from tests.services import ROOT, S3Bucket
from tests.storage_backends import open_storage

MiB = 1024 * 1024
M = len(PACK_MAGIC)


@pytest.fixture(params=["local", "s3", "s3-cached"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "local":
        return {"kind": "local", "root": str(tmp_path / "packs")}
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    cache = str(tmp_path / "cache") if request.param == "s3-cached" else None
    return {"kind": "s3", "url": bucket.url("repo"), "spool": str(tmp_path / "spool"), "cache": cache}


@pytest.fixture
def storage(spec: dict[str, Any]):
    s = open_storage(spec)
    yield s
    s.close()


def another(spec: dict[str, Any], tag: str = "2") -> Any:
    """An independent instance on the same packs (own spool and cache dirs)."""
    other = dict(spec)
    for key in ("spool", "cache"):
        if other.get(key):
            other[key] = other[key] + "-" + tag
    return open_storage(other)


def pname(i: int, fill: str = "0") -> str:
    return f"{i:02x}" + fill * 30


def test_create_starts_with_magic_and_refuses_existing_name(storage, spec) -> None:
    a = storage.create(pname(0xAB))
    assert a.size == M
    with pytest.raises(FileExistsError):
        storage.create(pname(0xAB))  # while open
    a.close()
    assert storage.read(pname(0xAB), 0, M) == PACK_MAGIC
    with pytest.raises(FileExistsError):
        storage.create(pname(0xAB))
    other = another(spec)
    try:
        with pytest.raises(FileExistsError):
            other.create(pname(0xAB))  # another process sees it too
        assert other.read(pname(0xAB), 0, M) == PACK_MAGIC
    finally:
        other.close()


def test_append_returns_offsets_and_is_readable_at_once(storage) -> None:
    name = pname(0xCD, "1")
    a = storage.create(name)
    offsets = [a.append(bytes([i]) * (100 + i)) for i in range(10)]
    expected = M
    for i, off in enumerate(offsets):
        assert off == expected
        assert storage.read(name, off, 100 + i) == bytes([i]) * (100 + i)  # before any sync
        expected += 100 + i
    assert a.size == expected
    assert storage.size(name) == expected
    a.sync()
    a.close()
    assert storage.size(name) == expected
    assert storage.read(name, offsets[3], 103) == bytes([3]) * 103


def test_ranged_reads_across_syncs_and_after_close(storage, spec) -> None:
    """Ranges that start, end and cross anywhere, including sync boundaries."""
    name = pname(0x10, "7")
    a = storage.create(name)
    data = bytearray(PACK_MAGIC)
    for i in range(12):
        piece = os.urandom(1000 + 337 * i)
        assert a.append(piece) == len(data)
        data += piece
        if i % 3 == 2:
            a.sync()  # several durable steps (object stores: several objects)
    probes = [(0, M), (5, 20), (M, 1000), (999, 4000), (len(data) - 1, 1), (1234, len(data) - 1234)]
    for off, n in probes:
        assert storage.read(name, off, n) == bytes(data[off : off + n])
    a.sync()
    other = another(spec)
    try:  # durable ranges as another process sees them, while the writer still has it open
        for off, n in probes:
            assert other.read(name, off, n) == bytes(data[off : off + n])
        a.close()
        for off, n in probes:
            assert other.read(name, off, n) == bytes(data[off : off + n])
            assert storage.read(name, off, n) == bytes(data[off : off + n])
        with other.open_stream(name) as stream:
            assert stream.read() == bytes(data)
            stream.seek(777)
            assert stream.read(50) == bytes(data[777:827])
            assert stream.seek(0, 2) == len(data)
    finally:
        other.close()


def test_missing_pack_and_short_reads(storage, spec) -> None:
    missing = pname(0xEE, "2")
    with pytest.raises(PackMissing):
        storage.read(missing, 0, 1)
    with pytest.raises(PackMissing):
        storage.size(missing)
    with pytest.raises(PackMissing):
        storage.mtime(missing)
    with pytest.raises(PackMissing):
        storage.open_stream(missing)
    name = pname(0xEF, "3")
    a = storage.create(name)
    a.append(b"x" * 10)
    with pytest.raises(EOFError):
        storage.read(name, M + 5, 10)  # open
    a.close()
    with pytest.raises(EOFError):
        storage.read(name, M + 5, 10)  # crosses the end
    with pytest.raises(EOFError):
        storage.read(name, M + 100, 10)  # starts after the end


def test_pack_deleted_by_another_instance_is_missing(storage, spec) -> None:
    """gc on another node deletes a pack: this instance reports it missing, not stale."""
    name = pname(0x42, "8")
    a = storage.create(name)
    a.append(b"y" * 100)
    a.close()
    other = another(spec)
    try:
        assert other.read(name, M, 100) == b"y" * 100
        other.delete(name)
        with pytest.raises(PackMissing):
            other.read(name, M, 100)
        assert name not in set(other.names())
    finally:
        other.close()
    fresh = another(spec, "3")
    try:
        with pytest.raises(PackMissing):
            fresh.read(name, M, 100)
    finally:
        fresh.close()


def test_names_mtime_and_delete(storage) -> None:
    names = sorted(pname(i, "4") for i in range(0, 256, 37))
    before = time.time()
    for n in names:
        storage.create(n).close()
    assert sorted(storage.names()) == names
    for n in names:
        assert before - 5 <= storage.mtime(n) <= time.time() + 5
    storage.read(names[0], 0, 8)  # cache a read handle / the pack, then delete
    storage.delete(names[0])
    assert sorted(storage.names()) == names[1:]
    with pytest.raises(PackMissing):
        storage.read(names[0], 0, 8)
    storage.delete(names[0])  # idempotent


def test_open_pack_is_listed(storage) -> None:
    """A pack being written is a name gc must see (it registers packs before creating)."""
    a = storage.create(pname(0x77, "9"))
    assert pname(0x77, "9") in set(storage.names())
    a.close()


def test_concurrent_appends_and_syncs_do_not_interleave(storage, spec) -> None:
    name = pname(0xAA, "5")
    a = storage.create(name)
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(25):
            data = bytes([k]) * (1000 + i)
            off = a.append(data)
            a.sync(off + len(data))  # a small write's group commit
            with lock:
                results.append((off, data))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other = another(spec)
    try:
        results.sort()
        pos = M
        for off, data in results:  # every acknowledged append is durable and in place
            assert off == pos
            assert other.read(name, off, len(data)) == data
            pos += len(data)
        a.close()
        assert other.size(name) == pos
        assert storage.size(name) == pos
    finally:
        other.close()


def test_synced_bytes_survive_a_killed_writer(spec) -> None:
    """Durability ordering: after SIGKILL, what a completed sync covered reads back
    unchanged; what came after it is either there intact or missing (EOFError)."""
    name = pname(0x5E, "6")
    synced, unsynced = os.urandom(50_000), os.urandom(30_000)
    arg = json.dumps({"spec": spec, "name": name, "synced": synced.hex(), "unsynced": unsynced.hex()})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "tests.storage_backends", "crash"], input=arg,
                            capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert result.returncode == -9, result.stderr
    offset = int(result.stdout.strip())
    fresh = another(spec, "after-crash")
    try:
        assert name in set(fresh.names())
        assert fresh.read(name, 0, M) == PACK_MAGIC
        assert fresh.read(name, offset, len(synced)) == synced
        assert fresh.size(name) >= offset + len(synced)
        try:
            tail = fresh.read(name, offset + len(synced), len(unsynced))
        except EOFError:
            tail = None
        assert tail in (None, unsynced)
        fresh.delete(name)
        assert name not in set(fresh.names())
    finally:
        fresh.close()


def test_large_pack(storage, spec) -> None:
    """A 40 MiB pack: object stores upload it in parts; ranges across part borders."""
    name = pname(0xB1, "a")
    a = storage.create(name)
    block = os.urandom(MiB)
    for i in range(40):
        a.append(bytes([i]) + block[1:])
    a.close()
    assert storage.size(name) == M + 40 * MiB
    other = another(spec)
    try:
        for off in (M + 16 * MiB - 10, M + 32 * MiB - 3, M + 39 * MiB):
            got = other.read(name, off, 20)
            pos = off - M
            expected = b"".join(bytes([i]) + block[1:] for i in (pos // MiB, pos // MiB + 1))
            assert got == expected[pos % MiB : pos % MiB + 20][: len(got)]
        assert other.read(name, M + 40 * MiB - 4, 4) == block[-4:]
    finally:
        other.close()


def test_large_sync(storage, spec) -> None:
    """One sync covering 36 MiB (a big write's commit) is one multipart segment."""
    name = pname(0xB2, "b")
    a = storage.create(name)
    data = os.urandom(36 * MiB)
    off = a.append(data)
    a.sync(off + len(data))
    other = another(spec)
    try:
        assert other.read(name, off + 20 * MiB, 1000) == data[20 * MiB : 20 * MiB + 1000]
        assert other.size(name) == off + len(data)
    finally:
        other.close()
    a.append(b"more")
    a.close()
    assert storage.read(name, off + len(data), 4) == b"more"
