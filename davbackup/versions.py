"""File versions: ordered chunk lists with byte offsets, stored as shared segments
(DESIGN.md §7.3, :mod:`davbackup.chunklists`)."""

from __future__ import annotations

import sqlite3
from typing import Iterable

import blake3

from davbackup import chunklists


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
