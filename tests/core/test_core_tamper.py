"""Tampering with pack files: reads fail loudly, naming the file and the chunk."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from davbackup.errors import IntegrityError
from davbackup.maintenance.check import check_repository
from davbackup.pack import HEADER_SIZE
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, USER, flip_byte, init_repo, read_file, version_chunk_ids, write_file

FILES = {f"/dir/file-{i}.bin": random.Random(i).randbytes(40_000 + 1000 * i) for i in range(6)}


def populate(ns) -> None:
    ns.mkdir("/dir")
    for path, data in FILES.items():
        write_file(ns, path, data, piece=5000)


def chunk_location(repo: Repository, chunk_id: bytes) -> tuple[Path, int, int]:
    loc = repo.chunks.locate(chunk_id)
    assert loc is not None
    name = repo.chunks.pack_name(loc.pack_id)
    return repo.storage.path(name), loc.offset, loc.stored_len


def only_used_by(repo: Repository, ns, path: str) -> bytes:
    """A chunk of ``path`` that no other test file shares."""
    others = set()
    for p in FILES:
        if p != path:
            others.update(version_chunk_ids(repo, ns, p))
    mine = [c for c in version_chunk_ids(repo, ns, path) if c not in others]
    assert mine
    return mine[len(mine) // 2]


@pytest.mark.parametrize("where", ["ciphertext", "tag", "header-id", "header-length", "header-nonce"])
def test_flipped_byte_names_path_and_chunk(small_repo: Repository, small_ns, where: str) -> None:
    populate(small_ns)
    victim = "/dir/file-3.bin"
    cid = only_used_by(small_repo, small_ns, victim)
    pack, offset, stored_len = chunk_location(small_repo, cid)
    delta = {
        "ciphertext": HEADER_SIZE + stored_len // 2,
        "tag": HEADER_SIZE + stored_len - 1,
        "header-id": 20,
        "header-length": 10,
        "header-nonce": 50,
    }[where]
    flip_byte(pack, offset + delta)

    with pytest.raises(IntegrityError) as info:
        read_file(small_ns, victim)
    message = str(info.value)
    assert victim in message
    assert cid.hex()[:16] in message
    assert info.value.http_status == 500

    for path, data in FILES.items():
        if path != victim:
            assert read_file(small_ns, path) == data

    # reads of the damaged file that avoid the damaged chunk still work
    data = FILES[victim]
    with small_ns.open_read(victim) as reader:
        assert reader.read(100) == data[:100]

    report = check_repository(small_repo, read_data=True)
    assert not report.ok
    assert any(cid.hex()[:16] in p and victim in p for p in report.problems), report.problems
    assert check_repository(small_repo, read_data=False).ok  # structure is intact


def test_tamper_survives_reopen(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", small=True)
    populate(repo.namespace(USER))
    victim = "/dir/file-1.bin"
    cid = only_used_by(repo, repo.namespace(USER), victim)
    repo.close()
    repo = Repository.open(tmp_path / "repo", PASSPHRASE, mode="read")
    try:
        pack, offset, _stored_len = chunk_location(repo, cid)
        flip_byte(pack, offset + HEADER_SIZE + 3)
        ns = repo.namespace(USER)
        with pytest.raises(IntegrityError, match=cid.hex()[:16]):
            read_file(ns, victim)
        assert read_file(ns, "/dir/file-2.bin") == FILES["/dir/file-2.bin"]
    finally:
        repo.close()


def test_truncated_pack(small_repo: Repository, small_ns) -> None:
    populate(small_ns)
    victim = "/dir/file-5.bin"
    cid = only_used_by(small_repo, small_ns, victim)
    pack, offset, stored_len = chunk_location(small_repo, cid)
    small_repo.storage.forget(pack.stem)
    with open(pack, "r+b") as f:
        f.truncate(offset + HEADER_SIZE + stored_len // 2)
    with pytest.raises(IntegrityError) as info:
        read_file(small_ns, victim)
    assert victim in str(info.value)
    report = check_repository(small_repo, read_data=False)
    assert any("past the end" in p for p in report.problems), report.problems


def test_missing_pack(small_repo: Repository, small_ns) -> None:
    populate(small_ns)
    victim = "/dir/file-0.bin"
    cid = only_used_by(small_repo, small_ns, victim)
    pack, _offset, _len = chunk_location(small_repo, cid)
    small_repo.chunks.close()  # seal open packs so nothing holds the file
    pack.unlink()
    with pytest.raises(IntegrityError) as info:
        read_file(small_ns, victim)
    assert victim in str(info.value) and "missing" in str(info.value)
    report = check_repository(small_repo, read_data=False)
    assert any("missing" in p for p in report.problems)


def test_swapped_blobs_are_detected(small_repo: Repository, small_ns) -> None:
    """Copying one valid blob over another (same length) is caught by the ID check."""
    a, b = b"A" * 3000, b"B" * 3000
    write_file(small_ns, "/a", a)
    write_file(small_ns, "/b", b)
    ca, cb = version_chunk_ids(small_repo, small_ns, "/a")[0], version_chunk_ids(small_repo, small_ns, "/b")[0]
    pa, oa, la = chunk_location(small_repo, ca)
    pb, ob, lb = chunk_location(small_repo, cb)
    assert la == lb
    blob_a = pa.read_bytes()[oa : oa + HEADER_SIZE + la]
    with open(pb, "r+b") as f:
        f.seek(ob)
        f.write(blob_a)
    assert read_file(small_ns, "/a") == a
    with pytest.raises(IntegrityError, match="/b"):
        read_file(small_ns, "/b")
