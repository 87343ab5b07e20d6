"""`davbackup stats`: logical vs stored bytes, dedup and compression ratios."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from davbackup import chunk_index, tree_scan
from davbackup.pack import HEADER_SIZE
from davbackup.upload_sessions import count_sessions
from davbackup.users import count_users

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
    stored = sum(repo.storage.size(n) for n in repo.storage.names())
    files, folders, logical = tree_scan.totals(conn)
    chunks, plain, stored_in_chunks, unique, packs = chunk_index.totals(conn, HEADER_SIZE)
    return RepoStats(
        users=count_users(conn),
        files=files,
        folders=folders,
        logical_bytes=logical,
        unique_bytes=unique,
        stored_bytes=stored,
        chunk_count=chunks,
        chunk_plain_bytes=plain,
        chunk_stored_bytes=stored_in_chunks,
        pack_count=packs,
        open_sessions=count_sessions(conn),
    )
