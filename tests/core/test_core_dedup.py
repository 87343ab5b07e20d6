"""Deduplication across files: content-defined chunks are stored once per repository."""

from __future__ import annotations

import random

from davbackup.repository import Repository
from tests.core_fixtures import MiB, count_chunks, count_rows, read_file, sha256, version_chunk_ids, write_file


# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
CATALOG_BACKENDS = ("sqlite", "postgresql")


def test_one_byte_insertion_adds_few_chunks(repo: Repository, ns) -> None:
    data = random.Random(50).randbytes(50 * MiB)
    edited = data[:1000] + b"\xa5" + data[1000:]
    c0 = count_chunks(repo)
    write_file(ns, "/big.bin", data, piece=1 * MiB)
    c1 = count_chunks(repo)
    assert c1 - c0 >= 50 * MiB // (4 * MiB)

    packs_before = sum(1 for _ in repo.storage.names())
    stored_before = sum(repo.storage.size(n) for n in repo.storage.names())
    write_file(ns, "/big-edited.bin", edited, piece=777_777)
    c2 = count_chunks(repo)
    assert 1 <= c2 - c1 <= 3, f"{c2 - c1} new chunks for a one-byte insertion"
    stored_after = sum(repo.storage.size(n) for n in repo.storage.names())
    assert stored_after - stored_before <= 3 * 4 * MiB + 3 * 1024
    assert sum(1 for _ in repo.storage.names()) <= packs_before + 1

    write_file(ns, "/copy-of-big.bin", data, piece=3 * MiB + 1)
    assert count_chunks(repo) == c2, "an identical file must add no chunks"
    assert ns.stat("/copy-of-big.bin").etag == ns.stat("/big.bin").etag
    assert version_chunk_ids(repo, ns, "/copy-of-big.bin") == version_chunk_ids(repo, ns, "/big.bin")

    assert sha256(read_file(ns, "/big.bin")) == sha256(data)
    assert sha256(read_file(ns, "/big-edited.bin")) == sha256(edited)
    assert sha256(read_file(ns, "/copy-of-big.bin")) == sha256(data)


def test_dedup_across_users_and_within_a_file(repo: Repository, ns) -> None:
    repo.users.add("bob", "bob-password-1")
    bob = repo.namespace("bob")
    block = random.Random(9).randbytes(6 * MiB)
    write_file(ns, "/a", block)
    before = count_chunks(repo)
    write_file(bob, "/b", block)
    assert count_chunks(repo) == before
    # A file made of the same block three times does not store the repeats again: only
    # the chunks around the junctions are new, until the cuts fall into step with the
    # block's own (then the third copy repeats the second). How soon that happens
    # depends on the repository's secret seed: over 150 seeds, 1.3 MiB median and
    # 7 MiB at worst for the 12 MiB of repeats (512 KiB chunks, normalisation 2).
    plain = "SELECT coalesce(sum(plain_len), 0) FROM chunks"
    stored_before = repo.catalog.reader().execute(plain).fetchone()[0]
    write_file(ns, "/triple", block * 3)
    added = repo.catalog.reader().execute(plain).fetchone()[0] - stored_before
    assert added <= len(block) + 2 * repo.chunker.params.max_size
    assert read_file(ns, "/triple") == block * 3
    assert read_file(bob, "/b") == block


def test_empty_file_has_no_chunks(repo: Repository, ns) -> None:
    before = count_rows(repo, "chunks")
    entry = ns.create_empty("/empty")
    assert entry.size == 0
    assert count_rows(repo, "chunks") == before
    assert read_file(ns, "/empty") == b""
