"""File versions: ordered chunk lists with byte offsets, stored as shared segments
(DESIGN.md §7.3, :mod:`davbackup.chunklists`)."""

from __future__ import annotations

import sqlite3
from typing import Iterable

import blake3

from davbackup import chunklists
from davbackup.errors import IntegrityError


def version_etag(etag_key: bytes, size: int, chunk_ids: Iterable[bytes]) -> str:
    """A strong ETag: keyed hash of the size and chunk IDs, so equal content, equal tag."""
    h = blake3.blake3(key=etag_key)
    h.update(size.to_bytes(8, "big"))
    for cid in chunk_ids:
        h.update(cid)
    return h.hexdigest(16)


def insert_version(
    conn: sqlite3.Connection, size: int, etag: str, chunks: list[tuple[int, int, bytes]], now: float,
    checksums: bytes | None = None,
) -> int:
    """Insert a version and its ``(offset, length, chunk_id)`` rows; returns its ID."""
    cur = conn.execute(
        "INSERT INTO versions(size, etag, created, checksums) VALUES (?, ?, ?, ?)", (size, etag, now, checksums)
    )
    vid = int(cur.lastrowid)  # type: ignore[arg-type]
    chunklists.store(conn, vid, chunks)
    return vid


def verify_version(conn: sqlite3.Connection, etag_key: bytes, version_id: int, size: int, etag: str, path: str) -> None:
    """Check that a version's size and chunk list are the ones its keyed ETag was made
    of: a chunk list swapped with another file's, or a changed size, fails here."""
    rows = conn.execute(
        "SELECT offset, length, chunk_id FROM version_chunks WHERE version_id=? ORDER BY offset", (version_id,)
    ).fetchall()
    expected = 0
    for offset, length, _cid in rows:
        if offset != expected:
            break
        expected += length
    if expected != size or version_etag(etag_key, size, (bytes(r[2]) for r in rows)) != etag:
        raise IntegrityError(f"{path}: the catalog's chunk list or size of this file fails verification")
