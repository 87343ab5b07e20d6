"""Rebuild the chunk index from the packs alone (DESIGN.md §5).

Every blob header carries its chunk ID and lengths, and every blob is verified here
before it is indexed, so a lost or damaged ``chunks``/``packs`` table can be
recreated from what is on disk. Existing rows are kept; only missing ones are added.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from davbackup import chunk_index
from davbackup.checkpoint import journal_pack_names
from davbackup.pack import TYPE_DATA, BlobError, scan_pack

if TYPE_CHECKING:
    from davbackup.repository import Repository


@dataclass
class RebuildReport:
    packs_scanned: int = 0
    packs_added: int = 0
    blobs_seen: int = 0
    chunks_added: int = 0
    damaged_blobs: int = 0


def rebuild_index(repo: "Repository") -> RebuildReport:
    report = RebuildReport()
    known = {name: pack_id for pack_id, name in chunk_index.packs(repo.catalog.reader())}
    journal = journal_pack_names(repo.catalog, repo.catalog_url)
    for name in list(repo.storage.names()):
        if name in journal:
            continue  # the metadata journal's own packs (DESIGN.md §20)
        report.packs_scanned += 1
        found: list[tuple[bytes, int, int, int]] = []
        with repo.storage.open_stream(name) as stream:
            for blob in scan_pack(stream):
                if blob.header.blob_type != TYPE_DATA:
                    continue  # a journal record or checkpoint part of a pack gc has not compacted
                report.blobs_seen += 1
                data = repo.storage.read(name, blob.offset, blob.total_len)
                try:
                    repo.codec.open(data, expected_id=blob.header.chunk_id)
                except BlobError:
                    report.damaged_blobs += 1
                    continue
                found.append((blob.header.chunk_id, blob.offset, blob.header.stored_len, blob.header.plain_len))

        added_pack, added = repo.catalog.write(partial(_index_pack, pack_id=known.get(name), name=name, found=found))
        report.packs_added += int(added_pack)
        report.chunks_added += added
    return report


def _index_pack(
    conn: sqlite3.Connection, pack_id: int | None, name: str, found: list[tuple[bytes, int, int, int]]
) -> tuple[bool, int]:
    """In a transaction: register the pack if the catalog lacks it and index the chunks
    found in it; (whether the pack was added, chunks added)."""
    now = time.time()
    added_pack = pack_id is None
    if pack_id is None:
        pack_id = chunk_index.add_pack(conn, name, "sealed", now)
    rows = [(cid, pack_id, off, slen, plen, now) for cid, off, slen, plen in found]
    return added_pack, chunk_index.add_found(conn, pack_id, rows)

