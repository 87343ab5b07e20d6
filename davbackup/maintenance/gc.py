"""`davbackup gc`: reclaim the space of chunks nothing references (DESIGN.md §12).

1. Expire upload sessions idle longer than the session lifetime the server recorded
   in the catalog (``uploads.session_ttl``, davbackup/upload_settings.py), and delete file
   versions orphaned (overwritten or deleted) longer than the grace period.
2. Delete index rows of chunks that no version and no session references and that
   were not touched within the grace period. Writers touch every chunk they
   deduplicate against in the transaction that commits the reference, and that
   transaction fails if the chunk row is gone, so gc never silently breaks an
   in-flight write. With no server running (writer lock free) the grace is 0.
3. Rewrite sealed packs whose live share is below the threshold: live blobs are
   verified, copied into a new pack, fsynced, the index is repointed in one
   transaction, and only then is the old pack deleted. Packs that are still
   ``open`` (a writer may hold uncommitted chunks in them) are never touched.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from davbackup import chunk_index, clock, tree_bulk, upload_sessions, versions
from davbackup.checkpoint import compact, journal_pack_names, write_checkpoint
from davbackup.chunkstore import storage_error
from davbackup.errors import StorageFull
from davbackup.pack import HEADER_SIZE, BlobError
from davbackup.retention import PruneReport, load_policy, prune
from davbackup.storage import PackMissing
from davbackup.upload_settings import load_settings

if TYPE_CHECKING:
    from davbackup.repository import Repository

DEFAULT_GRACE_WHILE_SERVING = 3600.0


@dataclass
class GcReport:
    sessions_expired: int = 0
    chunks_deleted: int = 0
    packs_deleted: int = 0
    packs_rewritten: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    grace_seconds: float = 0.0
    unreadable_chunks: int = 0
    #: large deletions finished / large copies dropped that a crash had cut off
    trash_emptied: int = 0
    staging_dropped: int = 0
    journal_packs_deleted: int = 0
    pruned: PruneReport = field(default_factory=PruneReport)

    @property
    def bytes_freed(self) -> int:
        return self.bytes_before - self.bytes_after


def collect_garbage(
    repo: "Repository",
    grace_seconds: float | None = None,
    rewrite_threshold: float = 0.5,
    session_ttl: float | None = None,
) -> GcReport:
    """``session_ttl`` overrides the lifetime the server recorded (tests)."""
    with repo.exclusive("gc"):  # one gc at a time (across the cluster with PostgreSQL)
        return _collect(repo, grace_seconds, rewrite_threshold, session_ttl)


def _pack_bytes(repo: "Repository") -> int:
    total = 0
    for name in repo.storage.names():
        total += repo.storage.size(name)
    return total


def _collect(repo: "Repository", grace: float | None, threshold: float, session_ttl: float | None) -> GcReport:
    report = GcReport()
    if grace is None:
        grace = DEFAULT_GRACE_WHILE_SERVING if repo.writer_active() else 0.0
    report.grace_seconds = grace
    report.bytes_before = _pack_bytes(repo)
    now = clock.now()
    # History first: what retention lets go becomes orphaned versions (reclaimed by
    # this run once the grace period allows).
    # A crash can leave a large DELETE half moved to history or a large COPY half built
    # (DESIGN.md §19); a copy younger than the grace period may still be in progress.
    leftovers = tree_bulk.finish_leftovers(repo.catalog, staged_before=now - grace, best_effort=True)
    report.trash_emptied, report.staging_dropped = leftovers.trash_emptied, leftovers.staging_dropped
    report.pruned = prune(repo.catalog, load_policy(repo.catalog), now)
    ttl = session_ttl if session_ttl is not None else load_settings(repo.catalog.reader()).session_ttl

    def sweep(conn: sqlite3.Connection) -> tuple[int, int]:
        expired = upload_sessions.expire_idle(conn, now, ttl)
        for vid in versions.unused_orphans(conn, now - grace):
            versions.delete_version(conn, vid)
        return expired, chunk_index.delete_unreferenced(conn, now - grace)

    report.sessions_expired, report.chunks_deleted = repo.catalog.write(sweep)

    _reclaim_packs(repo, report, threshold)

    # The metadata journal (DESIGN.md §20.4): a checkpoint of the catalog as it is
    # now, then the journal packs and older checkpoints it makes redundant.
    if repo.journal is not None:
        write_checkpoint(repo.catalog, repo.storage, repo.keys.journal_key())
        report.journal_packs_deleted = compact(repo.catalog, repo.storage)

    # Pack files the catalog does not know are an interrupted gc's output (writers
    # register a pack before creating its file); only one gc runs at a time.
    # Files younger than the grace period are left alone all the same.
    known = chunk_index.pack_names(repo.catalog.reader())
    known |= journal_pack_names(repo.catalog, repo.catalog_url)
    for name in list(repo.storage.names()):
        if name not in known and repo.storage.mtime(name) <= now - grace:
            repo.storage.delete(name)
    report.bytes_after = _pack_bytes(repo)
    return report


def _reclaim_packs(repo: "Repository", report: GcReport, threshold: float) -> None:
    """Delete sealed packs nothing lives in; rewrite those whose live share is below ``threshold``."""
    conn = repo.catalog.reader()
    packs = chunk_index.sealed_packs(conn)
    live = chunk_index.live_bytes_by_pack(conn, HEADER_SIZE)
    # Dead packs first: deleting them needs no space, rewriting needs some.
    to_rewrite = []
    for pid, name in packs:
        try:
            size = repo.storage.size(name)
        except PackMissing:
            size = 0  # registered, but its file was never created (crash in between)
        live_bytes = live.get(pid, 0)
        if live_bytes == 0:
            _drop_pack(repo, pid, name)
            report.packs_deleted += 1
        elif live_bytes < threshold * size:
            to_rewrite.append((live_bytes, pid, name))
    # Cheapest copies first; on a full disk each one frees room for the next, and one
    # that finds no room does not stop the others.
    no_room: StorageFull | None = None
    for _live, pid, name in sorted(to_rewrite):
        try:
            report.unreadable_chunks += _rewrite_pack(repo, pid, name)
        except StorageFull as exc:
            no_room = exc
            continue
        report.packs_rewritten += 1
    if no_room is not None:
        raise no_room


def _drop_pack(repo: "Repository", pack_id: int, name: str) -> None:
    if repo.catalog.write(lambda conn: chunk_index.drop_pack_if_empty(conn, pack_id)):
        repo.storage.delete(name)


def _rewrite_pack(repo: "Repository", pack_id: int, name: str) -> int:
    """Copy a pack's live blobs into a new pack; returns how many failed to verify."""
    rows = chunk_index.chunks_in_pack(repo.catalog.reader(), pack_id)
    new_name = secrets.token_hex(16)
    appender = repo.storage.create(new_name)
    moved: list[tuple[int, bytes, int]] = []
    bad = 0
    try:
        try:
            for cid, off, slen in rows:
                blob = repo.storage.read(name, off, HEADER_SIZE + slen)
                try:
                    repo.codec.open(blob, expected_id=cid)
                except BlobError:
                    bad += 1  # keep the damaged original where check can still report it
                    continue
                moved.append((appender.append(blob), cid, off))
        finally:
            appender.close()  # fsyncs
    except OSError as exc:  # no space, I/O error: the copy is debris, the original stays
        repo.storage.delete(new_name)
        raise storage_error(exc, f"gc: cannot rewrite pack {name}") from exc

    created = clock.now()
    if repo.catalog.write(lambda conn: chunk_index.repoint(conn, pack_id, new_name, moved, created)):
        repo.storage.delete(name)
    return bad
