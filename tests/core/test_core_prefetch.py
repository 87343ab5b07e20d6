"""prefetch.py: a reader of packs in an object store keeps ranged GETs of its next
chunks in flight, within its bounds, and still verifies every chunk before returning
a byte of it. On a real Ceph RGW, with the catalog in SQLite and in PostgreSQL."""

from __future__ import annotations

import bisect
import concurrent.futures
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from davbackup import prefetch, storage_s3
from davbackup.config import RepoConfig
from davbackup.errors import IntegrityError
from davbackup.pack import HEADER_SIZE
from davbackup.reader import VersionReader
from davbackup.repository import Repository
from davbackup.storage_s3 import PREFETCH_THREADS, S3PackStorage, pack_key
from tests.core_fixtures import PASSPHRASE, SMALL_CHUNKER, USER, write_file
from tests.services import S3Bucket

CATALOG_BACKENDS = ("sqlite", "postgresql")

SPAN = 64 * 1024
DATA = os.urandom(3 * 1024 * 1024 + 777)  # ~400 chunks of 1–16 KiB, in a dozen packs


BUDGET = 4 * SPAN


@pytest.fixture
def small_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of at most 64 KiB (16 KiB first), so a few MiB need dozens of them, two
    in flight ahead, and room for four in the storage's budget."""
    monkeypatch.setattr(prefetch, "SPAN", SPAN)
    monkeypatch.setattr(prefetch, "DEPTH", 2)
    monkeypatch.setattr(prefetch, "FIRST_SPAN", SPAN // 4)
    monkeypatch.setattr(storage_s3, "PREFETCH_BYTES", BUDGET)


@pytest.fixture
def s3_repo(tmp_path: Path, s3_bucket: S3Bucket, catalog_url: str | None, small_spans: None) -> Iterator[Repository]:
    """A repository on the gateway holding /f.bin (:data:`DATA`), reopened so that every
    pack is read from the store (no spool, no cache)."""
    config = RepoConfig(repo_id=secrets.token_hex(16), chunker=SMALL_CHUNKER, pack_target_size=256 * 1024)
    root = tmp_path / "repo"
    repo = Repository.init(root, PASSPHRASE, config=config, packs_url=s3_bucket.url("r"), catalog_url=catalog_url)
    repo.users.add(USER, "pw-not-secret-1")
    write_file(repo.namespace(USER), "/f.bin", DATA)
    repo.close()
    reopened = Repository.open(root, PASSPHRASE, catalog_url=catalog_url, packs_url=s3_bucket.url("r"))
    yield reopened
    reopened.close()


def open_reader(repo: Repository) -> VersionReader:
    reader = repo.namespace(USER).open_read("/f.bin")
    assert reader._ahead is not None, "a kept chunk list read from the store is prefetched"
    return reader


def read_all(reader: VersionReader, end: int | None = None) -> bytes:
    out = []
    while True:
        piece = reader.read1(1 << 20 if end is None else end - reader.tell())
        if not piece:
            return b"".join(out)
        out.append(piece)


def test_a_download_is_a_few_bounded_ranges_and_every_byte_right(s3_repo: Repository) -> None:
    with open_reader(s3_repo) as reader:
        assert reader._list is not None
        chunks, ahead = len(reader._list), reader._ahead
        assert ahead is not None
        assert read_all(reader) == DATA
        packs = {s3_repo.chunks.known_place(reader._list.ids[32 * i: 32 * i + 32]).pack_id  # type: ignore[union-attr]
                 for i in range(chunks)}
        assert len(packs) > 3, "the file crosses pack borders"
        # consecutive blobs of a pack come in one ranged GET, and the file's ranges go on across packs
        assert len(packs) <= ahead.submitted <= len(DATA) // (SPAN // 2) + len(packs)
        assert ahead.submitted < chunks / 4
        largest_blob = 16 * 1024 + HEADER_SIZE + 64
        assert ahead.peak_bytes <= (prefetch.DEPTH + 1) * (SPAN + largest_blob)


def test_a_damaged_chunk_is_refused_after_the_bytes_before_it(s3_repo: Repository, s3_bucket: S3Bucket) -> None:
    with open_reader(s3_repo) as reader:
        assert reader._list is not None
        victim = len(reader._list) // 2
        start, _length, cid = reader._list.row(victim)
    s3_repo.chunks.learn_places([cid])
    place = s3_repo.chunks.known_place(cid)
    assert place is not None
    key = "r/" + pack_key(s3_repo.chunks.pack_name(place.pack_id))
    client = s3_bucket.ceph.client()
    pack = bytearray(client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read())
    pack[place.offset + HEADER_SIZE + 5] ^= 0x01  # inside the ciphertext
    client.put_object(Bucket=s3_bucket.name, Key=key, Body=bytes(pack))

    got = bytearray()
    with open_reader(s3_repo) as reader, pytest.raises(IntegrityError, match="failed verification"):
        while True:
            piece = reader.read1(1 << 20)
            assert piece
            got += piece
    assert bytes(got) == DATA[:start], "everything before the damaged chunk, nothing of it"


def test_close_leaves_no_fetch_behind_and_threads_stay_bounded(s3_repo: Repository) -> None:
    reader = open_reader(s3_repo)
    assert reader.read1(100) == DATA[:100]
    ahead = reader._ahead
    assert ahead is not None
    held = ahead.pending()
    assert 1 <= len(held) <= prefetch.DEPTH + 1
    reader.close()  # the client went away after its first bytes
    assert not ahead.pending()
    done, running = concurrent.futures.wait(held, timeout=60)
    assert not running and ahead.submitted == len(held), "nothing was asked for after the close"

    # many readers at once share the storage's few threads and its byte budget
    storage = s3_repo.storage
    assert isinstance(storage, S3PackStorage)
    pool = storage.prefetch_pool()
    assert pool is not None and pool.held == 0, "every range is given back"

    def download(_i: int) -> bool:
        with open_reader(s3_repo) as r:
            return read_all(r) == DATA

    with concurrent.futures.ThreadPoolExecutor(8) as clients:
        assert all(clients.map(download, range(8)))
    fetchers = [t for t in threading.enumerate() if t.name.startswith("davbackup-prefetch")]
    assert 1 <= len(fetchers) <= PREFETCH_THREADS
    assert SPAN < pool.peak <= BUDGET and pool.held == 0


def test_a_range_fetches_nothing_past_its_end_and_seeks_start_over(s3_repo: Repository) -> None:
    with open_reader(s3_repo) as reader:
        assert reader._list is not None
        ahead = reader._ahead
        assert ahead is not None
        first, end = 1_000_000, 1_200_000
        reader.seek(first)
        reader.expect(end)
        assert read_all(reader, end) == DATA[first:end]
        last = max(i for i in range(len(reader._list)) if reader._list.offsets[i] < end)
        assert ahead.planned == last + 1, "planned up to the chunk holding the range's last byte"
        reader.seek(10)  # back: the plan starts over from there
        reader.expect(len(DATA))
        assert reader.read(200_000) == DATA[10:200_010]
        reader.seek(len(DATA) - 5000)
        assert reader.read() == DATA[-5000:]


def test_a_lone_chunk_is_read_without_the_pool(s3_repo: Repository) -> None:
    with open_reader(s3_repo) as reader:
        assert reader._ahead is not None and reader._list is not None
        # 100 bytes inside the chunk holding byte 2,000,000 (DATA is random: a fixed
        # window crossed a chunk boundary in about one run of fifty)
        start, length, _cid = reader._list.row(bisect.bisect_right(reader._list.offsets, 2_000_000) - 1)
        assert length >= SMALL_CHUNKER.min_size >= 100
        reader.seek(start)
        reader.expect(start + 100)
        assert reader.read(100) == DATA[start : start + 100]
        assert reader._ahead.submitted == 0


def test_no_prefetch_for_a_local_directory_or_a_pack_cache(tmp_path: Path, s3_bucket: S3Bucket,
                                                          catalog_url: str | None) -> None:
    config = RepoConfig(repo_id=secrets.token_hex(16), chunker=SMALL_CHUNKER, pack_target_size=256 * 1024)
    local = Repository.init(tmp_path / "local", PASSPHRASE, config=config, catalog_url=catalog_url)
    local.users.add(USER, "pw-not-secret-1")
    write_file(local.namespace(USER), "/f.bin", DATA[:100_000])
    with local.namespace(USER).open_read("/f.bin") as reader:
        assert reader._ahead is None and reader.read() == DATA[:100_000]
    local.close()
    if catalog_url is not None:
        return  # one PostgreSQL database holds one repository
    root = tmp_path / "cached"
    s3 = Repository.init(root, PASSPHRASE, config=config, packs_url=s3_bucket.url("c"))
    s3.users.add(USER, "pw-not-secret-1")
    write_file(s3.namespace(USER), "/f.bin", DATA[:100_000])
    s3.close()
    cached = Repository.open(root, PASSPHRASE, packs_cache_bytes=64 * 1024 * 1024)
    try:
        with cached.namespace(USER).open_read("/f.bin") as reader:
            assert reader._ahead is None and reader.read() == DATA[:100_000]
    finally:
        cached.close()
