"""`davbackup stats`: logical vs stored bytes, dedup and compression ratios."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from davbackup.pack import HEADER_SIZE
from davbackup.uploads import count_sessions

if TYPE_CHECKING:
    from davbackup.repository import Repository


@dataclass(frozen=True)
class RepoStats:
    users: int
    files: int
    folders: int
    logical_bytes: int  # sum of file sizes, every copy counted
    unique_bytes: int  # plaintext of referenced chunks, each counted once
    stored_bytes: int  # pack files on disk
    chunk_count: int
    chunk_plain_bytes: int
    chunk_stored_bytes: int
    pack_count: int
    open_sessions: int

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.unique_bytes if self.unique_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        return self.chunk_plain_bytes / self.chunk_stored_bytes if self.chunk_stored_bytes else 1.0


def repository_stats(repo: "Repository") -> RepoStats:
    conn = repo.catalog.reader()
    one = lambda sql: conn.execute(sql).fetchone()[0] or 0  # noqa: E731
    stored = sum(repo.storage.size(n) for n in repo.storage.names())
    return RepoStats(
        users=one("SELECT count(*) FROM users"),
        files=one("SELECT count(*) FROM nodes WHERE is_dir=0"),
        folders=one("SELECT count(*) FROM nodes WHERE is_dir=1 AND parent_id IS NOT NULL"),
        logical_bytes=one("SELECT sum(v.size) FROM nodes n JOIN versions v ON v.id = n.version_id"),
        unique_bytes=one(
            "SELECT sum(plain_len) FROM chunks WHERE id IN (SELECT chunk_id FROM version_chunks)"
        ),
        stored_bytes=stored,
        chunk_count=one("SELECT count(*) FROM chunks"),
        chunk_plain_bytes=one("SELECT sum(plain_len) FROM chunks"),
        chunk_stored_bytes=one(f"SELECT sum(stored_len + {HEADER_SIZE}) FROM chunks"),
        pack_count=one("SELECT count(*) FROM packs"),
        open_sessions=count_sessions(conn),
    )
