"""`davbackup check`: catalog <-> pack consistency, optionally verifying every chunk.

Structural checks (always): SQLite's own integrity check; every file version's chunk
list is contiguous and sums to its size; every referenced chunk is indexed; every
indexed chunk lies inside an existing pack; every node has a parent and a readable
name. With ``read_data``: every indexed chunk is read, decrypted, and its ID checked.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from sqlite3 import Connection
from typing import TYPE_CHECKING, Callable

from davbackup import chunk_index, tree_scan, versions
from davbackup.checkpoint import journal_pack_names
from davbackup.errors import IntegrityError
from davbackup.pack import HEADER_SIZE, BlobError
from davbackup.storage import PackMissing
from davbackup.tree import Tree
from davbackup.tree_scan import node_path, version_paths
from davbackup.upload_sessions import sessions_missing_chunks

if TYPE_CHECKING:
    from davbackup.repository import Repository


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    chunks: int = 0
    packs: int = 0
    chunks_verified: int = 0
    healed: int = 0  # chunks recorded damaged before that now read back fine

    @property
    def ok(self) -> bool:
        return not self.problems


def check_repository(
    repo: "Repository", read_data: bool = False, progress: Callable[[int, int], None] | None = None
) -> CheckReport:
    report = CheckReport()
    conn = repo.catalog.reader()
    result = conn.execute("PRAGMA quick_check").fetchall()
    if result != [("ok",)]:
        report.problems.extend(f"catalog: {r[0]}" for r in result)
    _check_tree(report, conn, repo.tree)
    _check_versions(report, conn, repo.tree, repo.keys.etag_key())
    packs, sizes_on_disk = _check_pack_files(report, conn, repo)
    chunk_rows = chunk_index.all_chunks(conn)
    report.chunks = len(chunk_rows)
    _check_chunks(report, conn, repo.tree, chunk_rows, packs, sizes_on_disk)
    if read_data:
        _read_data(report, repo, chunk_rows, packs, sizes_on_disk, progress)
    return report


def _check_tree(report: CheckReport, conn: Connection, tree: Tree) -> None:
    """Nodes: parents exist, names and property values open (they are bound to their rows)."""
    for nid, parent in tree_scan.orphaned_nodes(conn):
        report.problems.append(f"catalog node {nid}: parent {parent} does not exist")
    detached = tree_scan.unfinished_bulk_count(conn)
    if detached:
        report.warnings.append(f"{detached} large deletions or copies are unfinished (in progress, or cut off"
                               " by a crash: the server's next start or gc finishes them)")
    for nid, parent, version_id, name_enc in tree_scan.all_names(conn):
        try:
            tree.open_name(name_enc, nid, parent, version_id)
        except IntegrityError as exc:
            report.problems.append(f"{node_path(conn, tree, parent) if parent else '?'}/…: {exc}")
    for nid, prop, blob in tree_scan.all_props(conn):
        try:
            tree.open_prop(blob, nid, prop, node_path(conn, tree, nid))
        except IntegrityError as exc:
            report.problems.append(str(exc))


def _check_versions(report: CheckReport, conn: Connection, tree: Tree, etag_key: bytes) -> None:
    """Versions: the keyed ETag covers the size and the chunk list, which is contiguous,
    adds up to the size and names only indexed chunks; every file has a version."""
    all_versions = versions.all_versions(conn)
    for vid, size, etag in all_versions:
        try:
            versions.verify_version(conn, etag_key, vid, size, etag, f"version {vid}")
        except IntegrityError:
            for path in version_paths(conn, tree, vid):
                report.problems.append(f"{path}: its size or chunk list does not match its ETag (catalog altered)")
    for nid in tree_scan.files_without_version(conn):
        report.problems.append(f"{node_path(conn, tree, nid)}: file has no version")
    report.files = tree_scan.file_count(conn)

    sizes = {vid: size for vid, size, _etag in all_versions}
    expected: dict[int, int] = defaultdict(int)
    bad_versions: set[int] = set()
    for vid, off, length in versions.all_chunk_spans(conn):
        if off != expected[vid]:
            bad_versions.add(vid)
        expected[vid] = off + length
    for vid, size in sizes.items():
        if expected.get(vid, 0) != size:
            bad_versions.add(vid)
    for vid in sorted(bad_versions):
        for path in version_paths(conn, tree, vid):
            report.problems.append(f"{path}: chunk list does not cover the file's {sizes.get(vid)} bytes")

    for vid, cid in versions.chunks_missing_from_index(conn):
        for path in version_paths(conn, tree, vid):
            report.problems.append(f"{path}: chunk {cid.hex()[:16]} is missing from the index")
    for sid, cid in sessions_missing_chunks(conn):
        report.problems.append(f"upload session {sid}: chunk {cid.hex()[:16]} is missing from the index")


def _check_pack_files(report: CheckReport, conn: Connection, repo: "Repository") -> tuple[dict[int, str], dict[int, int]]:
    """Packs in the catalog against pack files in storage; (packs by ID, sizes of those on disk)."""
    packs = dict(chunk_index.packs(conn))
    report.packs = len(packs)
    on_disk = set(repo.storage.names())
    sizes_on_disk: dict[int, int] = {}
    for pid, name in packs.items():
        if name in on_disk:
            sizes_on_disk[pid] = repo.storage.size(name)
    journal_packs = journal_pack_names(repo.catalog, repo.catalog_url)
    for name in sorted(journal_packs - on_disk):
        # In an object store a journal pack appears with its first sync, so a process
        # that died right after registering one leaves a row without a pack.
        report.warnings.append(
            f"journal pack {name} is missing: unless a server died before its first sync, `davbackup recover`"
            " would lack its records; gc writes a new checkpoint and forgets it"
        )
    for name in sorted(on_disk - set(packs.values()) - journal_packs):
        report.warnings.append(f"pack file {name} is not in the catalog (left by an interrupted gc; gc removes it)")
    return packs, sizes_on_disk


def _check_chunks(report: CheckReport, conn: Connection, tree: Tree, chunk_rows: list[tuple[bytes, int, int, int]],
                  packs: dict[int, str], sizes_on_disk: dict[int, int]) -> None:
    """Every indexed chunk lies inside an existing pack file."""
    missing_packs: set[int] = set()
    users_of_chunk = _chunk_users(conn)
    for cid, pid, off, slen in chunk_rows:
        where = partial(_describe, conn, tree, users_of_chunk, cid)

        if pid not in packs:
            report.problems.append(f"chunk {cid.hex()[:16]} ({where()}): pack {pid} is not in the catalog")
        elif pid not in sizes_on_disk:
            if pid not in missing_packs:
                missing_packs.add(pid)
                report.problems.append(f"pack {packs[pid]}: file is missing")
            report.problems.append(f"chunk {cid.hex()[:16]} ({where()}): its pack file is missing")
        elif off + HEADER_SIZE + slen > sizes_on_disk[pid]:
            report.problems.append(f"chunk {cid.hex()[:16]} ({where()}): lies past the end of pack {packs[pid]}")


def _read_data(report: CheckReport, repo: "Repository", chunk_rows: list[tuple[bytes, int, int, int]],
               packs: dict[int, str], sizes_on_disk: dict[int, int],
               progress: Callable[[int, int], None] | None) -> None:
    """``--read-data``: every chunk read, decrypted and its ID checked; failures are
    recorded as damaged, and if all read back fine, earlier damage is forgotten."""
    conn = repo.catalog.reader()
    users_of_chunk = _chunk_users(conn)
    total = len(chunk_rows)
    for i, (cid, pid, off, slen) in enumerate(chunk_rows):
        if progress:
            progress(i, total)
        if pid not in sizes_on_disk:
            repo.chunks.mark_damaged(cid, "its pack file is missing")
            continue
        try:
            blob = repo.storage.read(packs[pid], off, HEADER_SIZE + slen)
            repo.codec.open(blob, expected_id=cid)
            report.chunks_verified += 1
        except (BlobError, EOFError, PackMissing) as exc:
            repo.chunks.mark_damaged(cid, f"check --read-data: {exc}")
            needed_by = _describe(conn, repo.tree, users_of_chunk, cid)
            report.problems.append(
                f"chunk {cid.hex()[:16]} in pack {packs[pid]} at offset {off} ({needed_by}): {exc}"
            )
    if report.ok:
        report.healed = chunk_index.damaged_count(conn)
        if report.healed:  # every chunk read back fine: earlier damage was healed
            repo.catalog.write(chunk_index.forget_damage)


def _chunk_users(conn: Connection) -> Callable[[bytes], list[int]]:
    def users(cid: bytes) -> list[int]:
        return versions.versions_using(conn, cid)

    return users


def _describe(conn: Connection, tree: Tree, users_of_chunk: Callable[[bytes], list[int]], cid: bytes) -> str:
    """Every file version that needs the chunk: user, path, and when it was current."""
    versions = users_of_chunk(cid)
    if not versions:
        return "unreferenced"
    paths: list[str] = []
    for vid in versions:
        paths.extend(version_paths(conn, tree, vid))
    shown = paths[:20]
    more = f" and {len(paths) - len(shown)} more" if len(paths) > len(shown) else ""
    return "needed by " + "; ".join(shown) + more
