"""Shared fixtures and helpers for the storage-engine tests (``tests/core/``).

Not a conftest: test modules import what they use by name, e.g.
``from tests.core_fixtures import repo, ns, write_file``. Importing this module sets
``DAVBACKUP_KDF_MEMORY_KIB`` so that key slots use a cheap Argon2id.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["DAVBACKUP_KDF_MEMORY_KIB"] = "1024"

from davbackup.checkpoint import journal_pack_names  # noqa: E402
from davbackup.config import ChunkerParams, RepoConfig  # noqa: E402
from davbackup.fs import Namespace  # noqa: E402
from davbackup.repository import Repository  # noqa: E402

PASSPHRASE = "correct horse battery staple"
USER = "alice"
USER_PASSWORD = "alice-password-1"

# Small chunks so that kilobyte-sized test data spans many chunks (pyfastcdc's minimums).
SMALL_CHUNKER = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)
MiB = 1024 * 1024


def init_repo(
    path: Path, *, small: bool = False, pack_target_size: int | None = None, catalog_url: str | None = None
) -> Repository:
    """A fresh repository at ``path`` (mode ``rw``) with one user, :data:`USER`; with
    ``catalog_url`` its catalog is in that PostgreSQL database (packs stay in ``path``)."""
    config = RepoConfig(repo_id=secrets.token_hex(16))
    if small:
        config = RepoConfig(repo_id=config.repo_id, chunker=SMALL_CHUNKER, pack_target_size=256 * 1024)
    if pack_target_size is not None:
        config = RepoConfig(repo_id=config.repo_id, chunker=config.chunker, pack_target_size=pack_target_size)
    repo = Repository.init(path, PASSPHRASE, config=config, catalog_url=catalog_url)
    repo.users.add(USER, USER_PASSWORD)
    return repo


@pytest.fixture
def repo(tmp_path: Path, catalog_url: str | None) -> Iterator[Repository]:
    """A repository with the default (production) chunker parameters."""
    r = init_repo(tmp_path / "repo", catalog_url=catalog_url)
    yield r
    r.close()


@pytest.fixture
def small_repo(tmp_path: Path, catalog_url: str | None) -> Iterator[Repository]:
    """A repository with tiny chunks (1–16 KiB) and 256 KiB packs."""
    r = init_repo(tmp_path / "repo", small=True, catalog_url=catalog_url)
    yield r
    r.close()


@pytest.fixture
def ns(repo: Repository) -> Namespace:
    return repo.namespace(USER)


@pytest.fixture
def small_ns(small_repo: Repository) -> Namespace:
    return small_repo.namespace(USER)


def write_file(ns: Namespace, path: str, data: bytes, piece: int = 256 * 1024):
    """Stream ``data`` into ``path`` in pieces and commit; returns the Entry."""
    pending = ns.open_write(path)
    view = memoryview(data)
    for start in range(0, len(data), piece):
        pending.write(view[start : start + piece])
    return pending.commit()


def read_file(ns: Namespace, path: str) -> bytes:
    with ns.open_read(path) as reader:
        return reader.read()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def count_rows(repo: Repository, table: str) -> int:
    return int(repo.catalog.reader().execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def count_chunks(repo: Repository) -> int:
    return count_rows(repo, "chunks")


def pack_paths(repo_dir: Path) -> list[Path]:
    return sorted((repo_dir / "packs").glob("*/*.pack"))


def chunk_rows(repo_dir: Path) -> list[tuple[bytes, str, int, int]]:
    """``(chunk_id, pack_name, offset, stored_len)`` straight from the catalog file."""
    conn = sqlite3.connect(repo_dir / "catalog.sqlite")
    try:
        return conn.execute(
            "SELECT c.id, p.name, c.offset, c.stored_len FROM chunks c JOIN packs p ON p.id = c.pack_id"
            " ORDER BY p.name, c.offset"
        ).fetchall()
    finally:
        conn.close()


def version_chunk_ids(repo: Repository, ns: Namespace, path: str) -> list[bytes]:
    entry = ns.stat(path)
    conn = repo.catalog.reader()
    vid = conn.execute("SELECT version_id FROM nodes WHERE id=?", (entry.node_id,)).fetchone()[0]
    return [r[0] for r in conn.execute(
        "SELECT chunk_id FROM version_chunks WHERE version_id=? ORDER BY offset", (vid,)
    )]


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def data_pack_bytes(repo: Repository) -> int:
    """Bytes in chunk packs (not the metadata journal's packs, which grow with every commit)."""
    journal = journal_pack_names(repo.catalog, repo.catalog_url)
    return sum(repo.storage.size(n) for n in repo.storage.names() if n not in journal)
