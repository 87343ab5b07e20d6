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


def verify_version(conn: sqlite3.Connection, etag_key: bytes, version_id: int, size: int, etag: str, path: str,
                   *, keep: int = 0) -> list[tuple[int, int, bytes]] | None:
    """Check that a version's size and chunk list are the ones its keyed ETag was made
    of: a chunk list swapped with another file's, or a changed size, fails here.

    The list is read as a stream (memory does not grow with the file). With ``keep``,
    a list of at most that many chunks is returned, ``(offset, length, chunk_id)`` in
    order, so that a reader need not query it again; a longer one gives None."""
    cursor = conn.execute(
        "SELECT offset, length, chunk_id FROM version_chunks WHERE version_id=? ORDER BY offset", (version_id,)
    )
    h = blake3.blake3(key=etag_key)
    h.update(size.to_bytes(8, "big"))
    kept: list[tuple[int, int, bytes]] | None = [] if keep else None
    expected = 0
    contiguous = True
    for offset, length, cid in cursor:
        if offset != expected:
            contiguous = False
        expected += length
        h.update(cid)
        if kept is not None:
            if len(kept) < keep:
                kept.append((offset, length, bytes(cid)))
            else:
                kept = None
    if not contiguous or expected != size or h.hexdigest(16) != etag:
        raise IntegrityError(f"{path}: the catalog's chunk list or size of this file fails verification")
    return kept
