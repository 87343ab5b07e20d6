"""Blobs sealed in segments (blob version 2, DESIGN.md §5.1): which chunks get them,
ranged reads that verify only the segments they need, damage found per segment, and
repositories of format 1 (made by the previous release) read and written as before."""

from __future__ import annotations

import json
import random
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from davbackup.config import ChunkerParams, RepoConfig
from davbackup.errors import IntegrityError, WrongPassphrase
from davbackup.maintenance.check import check_repository
from davbackup.pack import HEADER_SIZE, SEGMENT_SHIFT, BlobHeader, scan_pack
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, USER, USER_PASSWORD, flip_byte, init_repo, read_file, write_file
from tests.server_fixtures import _env, davbackup

FIXTURES = Path(__file__).parents[1] / "fixtures"
SEGMENT = 1 << SEGMENT_SHIFT


def blob_headers(repo: Repository) -> list[BlobHeader]:
    headers = []
    for name in repo.storage.names():
        with repo.storage.open_stream(name) as stream:
            headers += [b.header for b in scan_pack(stream) if b.header.blob_type == 1]
    return headers


def one_chunk_repo(path: Path) -> Repository:
    """A repository whose chunks are at least 256 KiB: a smaller file is one chunk."""
    config = RepoConfig(repo_id=secrets.token_hex(16), chunker=ChunkerParams(min_size=256 * 1024))
    repo = Repository.init(path, PASSPHRASE, config=config)
    repo.users.add(USER, USER_PASSWORD)
    return repo


def ranged(repo: Repository, path: str, start: int, length: int) -> bytes:
    ns = repo.namespace("alice")
    entry = ns.lookup(path)
    assert entry is not None and entry.version_id is not None
    reader = ns.version_reader(entry.version_id, entry.size, entry.etag, entry.path)
    try:
        reader.seek(start)
        reader.expect(start + length)
        return reader.read(length)
    finally:
        reader.close()


def test_new_repositories_seal_large_uncompressed_chunks_in_segments(tmp_path: Path) -> None:
    with init_repo(tmp_path / "repo") as repo:
        assert json.loads((tmp_path / "repo" / "config.json").read_text())["version"] == 2
        ns = repo.namespace("alice")
        data = random.Random(5).randbytes(3 * 1024 * 1024)
        write_file(ns, "/random.bin", data)
        write_file(ns, "/small.bin", data[:SEGMENT])  # one segment: a version 1 blob
        write_file(ns, "/text.txt", b"compressible text\n" * 100_000)  # compressed: version 1
        headers = blob_headers(repo)
        segmented = [h for h in headers if h.segmented]
        assert segmented and all(h.shift == SEGMENT_SHIFT and not h.flags for h in segmented)
        # every chunk of the random file but perhaps its last (at most 64 KiB) is segmented
        assert len(data) - SEGMENT <= sum(h.plain_len for h in segmented) <= len(data)
        assert all(not h.segmented for h in headers if h.flags or h.plain_len <= SEGMENT)
        assert all(h.segmented for h in headers if not h.flags and h.plain_len > SEGMENT)
        assert len(headers) > len(segmented)
        assert read_file(ns, "/random.bin") == data
        rng = random.Random(6)
        edges = [SEGMENT - 1, SEGMENT, 2 * SEGMENT - 3, len(data) - 4096, len(data) - 1, 0]
        for start in edges + [rng.randrange(len(data)) for _ in range(200)]:
            length = min(rng.choice([1, 100, 4096, SEGMENT + 7, 300_000]), len(data) - start)
            assert ranged(repo, "/random.bin", start, length) == data[start:start + length]
        assert check_repository(repo, read_data=True).ok


def test_a_ranged_read_verifies_the_segments_it_returns(tmp_path: Path) -> None:
    """A flipped byte in one segment: ranges inside it fail (and the chunk is recorded
    as damaged), other segments of the same chunk still read; a whole read fails."""
    with one_chunk_repo(tmp_path / "repo") as repo:
        ns = repo.namespace("alice")
        data = random.Random(7).randbytes(200_000)  # one chunk, four segments
        write_file(ns, "/f", data)
        (cid,) = [bytes(r[0]) for r in repo.catalog.reader().execute("SELECT id FROM chunks")]
        loc = repo.chunks.locate(cid)
        assert loc is not None
        # a byte in segment 1's ciphertext
        flip_byte(repo.storage.path(repo.chunks.pack_name(loc.pack_id)), loc.offset + HEADER_SIZE + SEGMENT + 16 + 5)
        assert ranged(repo, "/f", 10, 4096) == data[10:4106]
        assert ranged(repo, "/f", 2 * SEGMENT + 1, 4096) == data[2 * SEGMENT + 1:2 * SEGMENT + 4097]
        with pytest.raises(IntegrityError, match="segment 1"):
            ranged(repo, "/f", SEGMENT + 100, 10)
        with pytest.raises(IntegrityError):
            ranged(repo, "/f", SEGMENT - 10, 20)  # spans segments 0 and 1: nothing of it is returned
        with pytest.raises(IntegrityError):
            read_file(ns, "/f")
        damaged = repo.catalog.reader().execute("SELECT count(*) FROM damaged_chunks")
        assert damaged.fetchone()[0] == 1


def test_a_segmented_blob_cut_short_or_moved_fails(tmp_path: Path) -> None:
    with one_chunk_repo(tmp_path / "repo") as repo:
        ns = repo.namespace("alice")
        data = random.Random(8).randbytes(150_000)
        write_file(ns, "/f", data)
        (cid,) = [bytes(r[0]) for r in repo.catalog.reader().execute("SELECT id FROM chunks")]
        loc = repo.chunks.locate(cid)
        assert loc is not None
        pack = repo.storage.path(repo.chunks.pack_name(loc.pack_id))
        with open(pack, "r+b") as f:
            f.truncate(loc.offset + HEADER_SIZE + loc.stored_len - 3)
        assert ranged(repo, "/f", 0, 100) == data[:100]  # its segment is all there
        with pytest.raises(IntegrityError):
            ranged(repo, "/f", len(data) - 100, 100)
        with pytest.raises(IntegrityError):
            read_file(ns, "/f")


def test_a_repository_of_format_1_is_read_and_written_as_before(tmp_path: Path) -> None:
    """Made by the release before blob version 2 (654b414; kept as a fixture): a 200,000
    byte random file (one uncompressed chunk, blob version 1) and a text file. It reads
    whole and by ranges, keeps format 1 and gets version 1 blobs only, so that release
    still reads it."""
    with tarfile.open(FIXTURES / "repo_format1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "repo"
    data = random.Random(2026).randbytes(200_000)
    with Repository.open(root, "fixture passphrase f1") as repo:
        assert repo.config.version == 1
        ns = repo.namespace("alice")
        assert read_file(ns, "/random.bin") == data
        assert read_file(ns, "/text.txt") == b"format 1 text, compressed\n" * 10_000
        for start in (0, SEGMENT + 5, 150_000, 199_000):
            assert ranged(repo, "/random.bin", start, 1000) == data[start:start + 1000]
        write_file(ns, "/new.bin", random.Random(9).randbytes(400_000))
        headers = blob_headers(repo)
        assert headers and not any(h.segmented for h in headers)
        assert check_repository(repo, read_data=True).ok
    assert json.loads((root / "config.json").read_text())["version"] == 1
    shutil.rmtree(root)


def test_blob_headers_of_version_2_are_checked() -> None:
    from davbackup.pack import BLOB_MAGIC, HEADER, BlobError

    def header(**kw: int) -> bytes:
        f = {"version": 2, "type": 1, "flags": 0, "shift": 16, "plain": 100_000, "stored": 100_000 + 32}
        f.update(kw)
        return HEADER.pack(BLOB_MAGIC, f["version"], f["type"], f["flags"], f["shift"], f["plain"], f["stored"],
                           bytes(32), bytes(12))

    assert BlobHeader.parse(header()).segment_span(65_535, 65_537) == (0, 2)
    for bad in ({"flags": 1}, {"type": 2}, {"shift": 3}, {"shift": 25}, {"plain": 0, "stored": 16},
                {"stored": 100_000 + 16}, {"stored": 100_000 + 48}, {"version": 3}):
        with pytest.raises(BlobError):
            BlobHeader.parse(header(**bad))


def test_upgrade_moves_a_repository_of_format_1_to_format_2(tmp_path: Path) -> None:
    """``davbackup upgrade``: only with the passphrase, only config.json changes, once;
    afterwards old blobs read as before and new large chunks are sealed in segments."""
    with tarfile.open(FIXTURES / "repo_format1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "repo"
    env = _env(tmp_path)
    packs_before = sorted(p.name for p in (root / "packs").rglob("*") if p.is_file())
    catalog_before = (root / "catalog.sqlite").read_bytes()

    env["DAVBACKUP_PASSPHRASE"] = "not the passphrase"
    wrong = subprocess.run([sys.executable, "-m", "davbackup", "upgrade", "--repo", str(root)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert wrong.returncode == WrongPassphrase.exit_code, wrong.stdout + wrong.stderr
    assert "Traceback" not in wrong.stderr
    assert json.loads((root / "config.json").read_text())["version"] == 1

    env["DAVBACKUP_PASSPHRASE"] = "fixture passphrase f1"
    first = davbackup(["upgrade", "--repo", str(root)], env)
    assert "format 1 -> 2" in first.stdout and "Restart running servers" in first.stdout
    config = json.loads((root / "config.json").read_text())
    assert config["version"] == 2 and oct((root / "config.json").stat().st_mode & 0o777) == "0o644"
    assert "already of format 2" in davbackup(["upgrade", "--repo", str(root)], env).stdout
    assert sorted(p.name for p in (root / "packs").rglob("*") if p.is_file()) == packs_before
    assert (root / "catalog.sqlite").read_bytes() == catalog_before

    data = random.Random(2026).randbytes(200_000)
    with Repository.open(root, "fixture passphrase f1") as repo:
        assert repo.config.version == 2
        ns = repo.namespace("alice")
        assert read_file(ns, "/random.bin") == data
        for start in (0, SEGMENT + 5, 199_000):
            assert ranged(repo, "/random.bin", start, 1000) == data[start:start + 1000]
        new = random.Random(10).randbytes(3 * 1024 * 1024)
        write_file(ns, "/new.bin", new)
        headers = blob_headers(repo)
        assert any(h.segmented for h in headers) and any(not h.segmented for h in headers)
        assert ranged(repo, "/new.bin", 2 * SEGMENT - 10, 4096) == new[2 * SEGMENT - 10: 2 * SEGMENT + 4086]
        assert check_repository(repo, read_data=True).ok
