"""The server's start: bring back what the catalog lost of its journaled commits
(DESIGN.md §20.7).

The server's catalog commits with ``synchronous=NORMAL``: a commit is in the WAL, but
the WAL is not synced, so a power cut can lose the newest commits. Their journal
records were synced before COMMIT, and the catalog stores the number and hash of the
last record it applied (``meta.journal_seq``, ``journal_head``) in the same
transaction, so at start the server reads the records after that number from its
journal pack (``meta.journal_writer_pack``) and applies them, in one transaction
synced with the WAL, before anything else writes (the server, and an admin command
that opens the catalog first). Only after a restart of the machine
(``meta.journal_boot``, synced with each server's first epoch, is not this boot's):
without one nothing of the WAL can be lost, and a record after ``journal_seq`` is of
a batch the process died in before its COMMIT, which every reader saw as not done.

* of the records of one sequence number, the one that continues the hash chain and
  has the greatest epoch is chosen; an epoch lower than the catalog's is a batch that
  did not commit (the server commits and syncs a new epoch before it answers the
  callers of a failed batch), so it is never applied;
* chunk rows the lost commits made are indexed again from the packs the catalog has
  still ``open`` (their blobs were synced before those commits; a blob of a write that
  never committed is indexed too, unreferenced, and gc removes it).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import blake3

from davbackup import chunk_index, journal_replay
from davbackup.catalog import Catalog, read_meta
from davbackup.journal import GENESIS, TYPE_JOURNAL, boot_id, open_blob, parse_record_id
from davbackup.pack import TYPE_DATA, BlobCodec, BlobError, scan_pack
from davbackup.storage import PackMissing, PackStorage

log = logging.getLogger(__name__)


@dataclass
class CatchUp:
    records: int = 0  # records applied
    skipped: int = 0  # records after the catalog's that were not applied (failed batches)
    chunks: int = 0  # chunk rows indexed again


@dataclass(frozen=True)
class _Found:
    seq: int
    digest: bytes
    doc: dict[str, Any]


def catch_up(catalog: Catalog, storage: PackStorage, journal_key: bytes, codec: BlobCodec) -> CatchUp:
    """Apply the journal records the catalog lacks; re-index the chunks of its open packs
    if any record was applied."""
    result = CatchUp()
    conn = catalog.reader()
    boot = boot_id()
    synced_boot = read_meta(conn, "journal_boot")
    if synced_boot is None or synced_boot == boot:
        # No server has committed without syncing since the machine started (the key
        # is synced at each server's start; a catalog without it was last written with
        # every commit synced): every commit is in the WAL (a killed process loses
        # nothing of it), so a record after journal_seq is of a batch that never
        # committed. It stays out (the start's new epoch supersedes it), as in the
        # catalog every reader saw.
        return result
    seq = int(read_meta(conn, "journal_seq") or 0)
    head_hex = read_meta(conn, "journal_head")
    head = bytes.fromhex(head_hex) if head_hex else GENESIS
    epoch = int(read_meta(conn, "journal_epoch") or 0)
    names = _packs_to_read(conn, seq)
    found: dict[int, list[_Found]] = {}
    for name in names:
        for rec in _records_after(storage, journal_key, name, seq):
            found.setdefault(rec.seq, []).append(rec)
    if not found:
        return result
    chain: list[_Found] = []
    prev = head
    n = seq + 1
    while n in found:
        pool = [r for r in found[n] if bytes.fromhex(r.doc["prev"]) == prev and r.doc.get("epoch", 0) >= epoch]
        if not pool:
            break
        chosen = max(pool, key=lambda r: r.doc.get("epoch", 0))
        chain.append(chosen)
        prev = chosen.digest
        n += 1
    result.skipped = sum(len(v) for v in found.values()) - len(chain)
    if not chain:
        return result

    def apply(conn: sqlite3.Connection) -> bool:
        if int(read_meta(conn, "journal_seq") or 0) != seq:
            return False  # another process caught up meanwhile
        for rec in chain:
            journal_replay.apply(conn, rec.doc)
        last = chain[-1]
        journal_replay.set_position(conn, last.seq, last.digest)
        conn.executemany("UPDATE journal_packs SET last_seq=max(last_seq, ?) WHERE name=?",
                         [(last.seq, name) for name in names])
        return True

    if not catalog.write(apply):
        return result
    result.records = len(chain)
    result.chunks = _reindex_open_packs(catalog, storage, codec)
    log.warning("the catalog lacked journal records %d..%d (its last commits were lost, e.g. by a power cut):"
                " applied them, %d chunk rows indexed again", chain[0].seq, chain[-1].seq, result.chunks)
    return result


def _packs_to_read(conn: sqlite3.Connection, seq: int) -> list[str]:
    """The server's current journal pack (the only one its lost commits can have records
    in: registering a pack syncs the WAL), or, in a catalog from before that was
    recorded, every journal pack that may hold records after ``seq``."""
    writer_pack = read_meta(conn, "journal_writer_pack")
    if writer_pack is not None:
        return [writer_pack]
    return [r[0] for r in conn.execute(
        "SELECT name FROM journal_packs WHERE kind='journal' AND last_seq >= ? ORDER BY first_seq", (seq,))]


def _records_after(storage: PackStorage, key: bytes, name: str, seq: int) -> list[_Found]:
    """The records after ``seq`` in one journal pack that verify (a torn tail ends it)."""
    out: list[_Found] = []
    try:
        with storage.open_stream(name) as stream:
            blobs = [b for b in scan_pack(stream) if b.header.blob_type == TYPE_JOURNAL]
        for blob in blobs:
            rec_seq, tag = parse_record_id(blob.header.chunk_id)
            if rec_seq <= seq:
                continue
            try:
                _h, payload = open_blob(key, storage.read(name, blob.offset, blob.total_len), TYPE_JOURNAL)
            except BlobError as exc:
                log.warning("journal record %d in pack %s cannot be read (%s); not applied", rec_seq, name, exc)
                continue
            digest = blake3.blake3(payload).digest()
            if digest[:24] != tag:
                continue
            out.append(_Found(rec_seq, digest, json.loads(payload)))
    except PackMissing:
        pass  # gc compacted it away: everything in it is in the catalog's checkpoint
    except (BlobError, OSError) as exc:
        log.warning("journal pack %s cannot be read (%s)", name, exc)
    return out


def _reindex_open_packs(catalog: Catalog, storage: PackStorage, codec: BlobCodec) -> int:
    """Index again every verified chunk blob of the packs still ``open`` that the index
    lacks (the lost commits' chunk rows)."""
    added = 0
    for pack_id, name in chunk_index.open_packs(catalog.reader()):
        found: list[chunk_index.IndexRow] = []
        now = time.time()
        try:
            with storage.open_stream(name) as stream:
                blobs = [b for b in scan_pack(stream) if b.header.blob_type == TYPE_DATA]
            for blob in blobs:
                try:
                    codec.open(storage.read(name, blob.offset, blob.total_len), expected_id=blob.header.chunk_id,
                               rehash=False)
                except BlobError:
                    continue
                found.append((blob.header.chunk_id, pack_id, blob.offset, blob.header.stored_len,
                              blob.header.plain_len, now))
        except (PackMissing, BlobError, OSError) as exc:
            log.warning("pack %s cannot be read to index its chunks again (%s)", name, exc)
            continue
        if found:
            added += catalog.write(partial(chunk_index.add_found, pack_id=pack_id, found=found))
    return added
