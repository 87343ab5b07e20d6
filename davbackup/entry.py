"""What the file system answers about a file or folder: :class:`Entry`, an immutable
snapshot of one node taken when it was looked up (DESIGN.md §10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from davbackup.tree import Node, join_path


class BodyReader(Protocol):
    def read(self, n: int = -1) -> bytes: ...


@dataclass(frozen=True)
class Entry:
    path: str
    name: str
    is_dir: bool
    size: int
    etag: str
    created: float
    modified: float
    node_id: int
    checksums: str | None = None  # "SHA1:<hex> MD5:<hex>" when the client sent a verified SHA-1
    version_id: int | None = None  # a file's current version (for version_reader without a second lookup)


def entry_of(parts: list[str], node: Node) -> Entry:
    return Entry(join_path(parts), parts[-1] if parts else "", node.is_dir, node.size, node.etag,
                 node.created, node.modified, node.id, node.checksums, node.version_id)
