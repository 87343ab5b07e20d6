"""`davbackup check`: catalog <-> pack consistency, optionally verifying every chunk.

Structural checks (always): SQLite's own integrity check; every file version's chunk
list is contiguous and sums to its size; every referenced chunk is indexed; every
indexed chunk lies inside an existing pack; every node has a parent and a readable
name. With ``read_data``: every indexed chunk is read, decrypted, and its ID checked.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from davbackup.versions import verify_version
from davbackup.errors import IntegrityError
from davbackup.maintenance.paths import node_path, version_paths
from davbackup.checkpoint import journal_pack_names
from davbackup.pack import HEADER_SIZE, BlobError
from davbackup.storage import PackMissing
from davbackup.tree import TRASH
from davbackup.uploads import sessions_missing_chunks

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
    tree = repo.tree

    result = conn.execute("PRAGMA quick_check").fetchall()
    if result != [("ok",)]:
        report.problems.extend(f"catalog: {r[0]}" for r in result)

    # nodes: parents and names
    for nid, parent in conn.execute(
        "SELECT n.id, n.parent_id FROM nodes n WHERE n.parent_id IS NOT NULL AND n.parent_id < ?"
        " AND NOT EXISTS (SELECT 1 FROM nodes p WHERE p.id = n.parent_id)", (TRASH,)
    ).fetchall():
        report.problems.append(f"catalog node {nid}: parent {parent} does not exist")
    detached = conn.execute("SELECT count(*) FROM nodes WHERE parent_id >= ?", (TRASH,)).fetchone()[0]
    if detached:
        report.warnings.append(f"{detached} large deletions or copies are unfinished (in progress, or cut off"
                               " by a crash: the server's next start or gc finishes them)")
    for nid, parent, version_id, name_enc in conn.execute(
        "SELECT id, parent_id, version_id, name_enc FROM nodes WHERE parent_id IS NOT NULL"
        " UNION ALL SELECT node_id, parent_id, version_id, name_enc FROM node_history"
    ).fetchall():
        try:
            tree.open_name(name_enc, nid, parent, version_id)
        except IntegrityError as exc:
            report.problems.append(f"{node_path(conn, tree, parent) if parent else '?'}/…: {exc}")
    for nid, prop, blob in conn.execute(
        "SELECT node_id, name, value_enc FROM props UNION ALL SELECT node_id, name, value_enc FROM props_history"
    ).fetchall():
        try:
            tree.open_prop(blob, nid, prop, node_path(conn, tree, nid))
        except IntegrityError as exc:
            report.problems.append(str(exc))
    # versions: the keyed ETag covers the size and the chunk list
    for vid, size, etag in conn.execute("SELECT id, size, etag FROM versions").fetchall():
        try:
            verify_version(conn, repo.keys.etag_key(), vid, size, etag, f"version {vid}")
        except IntegrityError:
            for path in version_paths(conn, tree, vid):
                report.problems.append(f"{path}: its size or chunk list does not match its ETag (catalog altered)")
    for nid, in conn.execute(
        "SELECT id FROM nodes WHERE is_dir=0 AND (version_id IS NULL"
        " OR NOT EXISTS (SELECT 1 FROM versions v WHERE v.id = nodes.version_id))"
    ).fetchall():
        report.problems.append(f"{node_path(conn, tree, nid)}: file has no version")
    report.files = conn.execute("SELECT count(*) FROM nodes WHERE is_dir=0").fetchone()[0]

    # versions: contiguous chunk lists that add up to the size
    sizes = dict(conn.execute("SELECT id, size FROM versions").fetchall())
    expected: dict[int, int] = defaultdict(int)
    bad_versions: set[int] = set()
    for vid, off, length in conn.execute(
        "SELECT version_id, offset, length FROM version_chunks ORDER BY version_id, offset"
    ):
        if off != expected[vid]:
            bad_versions.add(vid)
        expected[vid] = off + length
    for vid, size in sizes.items():
        if expected.get(vid, 0) != size:
            bad_versions.add(vid)
    for vid in sorted(bad_versions):
        for path in version_paths(conn, tree, vid):
            report.problems.append(f"{path}: chunk list does not cover the file's {sizes.get(vid)} bytes")

    # referenced chunks must be indexed
    for vid, cid in conn.execute(
        "SELECT vc.version_id, vc.chunk_id FROM version_chunks vc"
        " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = vc.chunk_id)"
    ).fetchall():
        for path in version_paths(conn, tree, vid):
            report.problems.append(f"{path}: chunk {cid.hex()[:16]} is missing from the index")
    for sid, cid in sessions_missing_chunks(conn):
        report.problems.append(f"upload session {sid}: chunk {cid.hex()[:16]} is missing from the index")

    # packs: files exist and hold the indexed chunks
    packs = dict(conn.execute("SELECT id, name FROM packs").fetchall())
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
    chunk_rows = conn.execute("SELECT id, pack_id, offset, stored_len FROM chunks ORDER BY pack_id, offset").fetchall()
    report.chunks = len(chunk_rows)
    missing_packs: set[int] = set()
    users_of_chunk = _chunk_users(conn)
    for cid, pid, off, slen in chunk_rows:
        def where() -> str:
            return _describe(conn, tree, users_of_chunk, cid)

        if pid not in packs:
            report.problems.append(f"chunk {cid.hex()[:16]} ({where()}): pack {pid} is not in the catalog")
        elif pid not in sizes_on_disk:
            if pid not in missing_packs:
                missing_packs.add(pid)
                report.problems.append(f"pack {packs[pid]}: file is missing")
            report.problems.append(f"chunk {cid.hex()[:16]} ({where()}): its pack file is missing")
        elif off + HEADER_SIZE + slen > sizes_on_disk[pid]:
            report.problems.append(f"chunk {cid.hex()[:16]} ({where()}): lies past the end of pack {packs[pid]}")

    if read_data:
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
                where = _describe(conn, tree, users_of_chunk, cid)
                report.problems.append(
                    f"chunk {cid.hex()[:16]} in pack {packs[pid]} at offset {off} ({where}): {exc}"
                )
        if report.ok:
            report.healed = conn.execute("SELECT count(*) FROM damaged_chunks").fetchone()[0]
            if report.healed:  # every chunk read back fine: earlier damage was healed
                repo.catalog.write(lambda c: c.execute("DELETE FROM damaged_chunks"))
    return report


def _chunk_users(conn) -> Callable[[bytes], list[int]]:  # type: ignore[no-untyped-def]
    def users(cid: bytes) -> list[int]:
        return [r[0] for r in conn.execute("SELECT DISTINCT version_id FROM version_chunks WHERE chunk_id=?", (cid,))]

    return users


def _describe(conn, tree, users_of_chunk, cid: bytes) -> str:  # type: ignore[no-untyped-def]
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
