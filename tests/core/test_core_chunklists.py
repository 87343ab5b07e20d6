"""chunklists.py: chunk lists as shared, content-defined segments."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import blake3

from davbackup import chunklists
from davbackup.repository import Repository
from tests.core_fixtures import USER, init_repo, read_file, write_file


def ids(n: int, seed: int = 0) -> list[bytes]:
    return [blake3.blake3(f"{seed}-{i}".encode()).digest() for i in range(n)]


def as_rows(chunk_ids: list[bytes], length: int = 1000) -> list[tuple[int, int, bytes]]:
    return [(i * length, length, cid) for i, cid in enumerate(chunk_ids)]


def test_split_is_content_defined_and_bounded() -> None:
    rows = as_rows(ids(5000))
    segments = chunklists.split(rows)
    assert [r for s in segments for r in s] == rows  # nothing lost, order kept
    assert all(len(s) <= chunklists.MAX_SEGMENT_CHUNKS for s in segments)
    for s in segments[:-1]:
        last = s[-1][2]
        assert last[-1] % chunklists.BOUNDARY_MODULUS == 0 or len(s) == chunklists.MAX_SEGMENT_CHUNKS
    assert 40 <= 5000 / len(segments) <= 100  # about 64 chunks per segment
    # inserting one chunk near the start changes only the segment that holds it
    changed = rows[:10] + [(0, 1, b"\x01" * 32)] + rows[10:]
    before = {tuple(cid for _, _, cid in s) for s in segments}
    after = {tuple(cid for _, _, cid in s) for s in chunklists.split(changed)}
    assert len(after - before) == 1


def test_versions_share_unchanged_segments(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "c.sqlite")
    for statement in chunklists.SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(chunklists.VIEW)
    base = ids(4096)
    chunklists.store(conn, 1, as_rows(base))
    segments_before = conn.execute("SELECT count(*) FROM segments").fetchone()[0]
    edited = list(base)
    edited[2000] = b"\x02" * 31 + b"\x03"  # one chunk rewritten
    chunklists.store(conn, 2, as_rows(edited))
    new_segments = conn.execute("SELECT count(*) FROM segments").fetchone()[0] - segments_before
    assert 1 <= new_segments <= 2
    new_rows = conn.execute(
        "SELECT count(*) FROM segment_chunks WHERE segment_id > (SELECT max(segment_id) FROM version_segments"
        " WHERE version_id=1)"
    ).fetchone()[0]
    assert new_rows <= 2 * chunklists.MAX_SEGMENT_CHUNKS
    flat = conn.execute(
        "SELECT offset, length, chunk_id FROM version_chunks WHERE version_id=2 ORDER BY offset"
    ).fetchall()
    assert [(o, n, bytes(c)) for o, n, c in flat] == as_rows(edited)
    chunklists.drop(conn, 1)
    assert conn.execute("SELECT count(*) FROM version_chunks WHERE version_id=2").fetchone()[0] == 4096
    chunklists.drop(conn, 2)
    for table in ("segments", "segment_chunks", "version_segments"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_files_read_back_through_segments(tmp_path: Path) -> None:
    repo: Repository = init_repo(tmp_path / "repo", small=True)
    try:
        ns = repo.namespace(USER)
        rng = random.Random(5)
        data = rng.randbytes(3_000_000)  # ~700 small chunks: several segments
        write_file(ns, "/big.bin", data)
        assert read_file(ns, "/big.bin") == data
        reader = ns.open_read("/big.bin")
        for start in (0, 1, 4095, 1_234_567, 2_999_990):
            reader.seek(start)
            assert reader.read(9) == data[start : start + 9]
        conn = repo.catalog.reader()
        assert conn.execute("SELECT count(*) FROM version_segments").fetchone()[0] > 3
    finally:
        repo.close()
