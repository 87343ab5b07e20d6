"""What the namespaces of one repository work with (DESIGN.md §10).

:class:`~davbackup.repository.Repository` is the one composition root: it builds a
:class:`FileStore` once, from its parts, and hands it to every
:class:`~davbackup.fs.Namespace` and to the
:class:`~davbackup.uploads.UploadManager`, which see nothing else of the repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from davbackup.lookup_cache import LookupCache

if TYPE_CHECKING:
    from davbackup.catalog import Catalog
    from davbackup.chunkstore import ChunkStore
    from davbackup.entry import Entry
    from davbackup.tree import Tree
    from davbackup.versions import VerifiedChunkLists
    from davbackup.writer import FileWriter


@dataclass(frozen=True)
class FileStore:
    """The catalog, the tree (its name keys), the chunk store readers read from, the
    chunk lists verified so far, the ETag key, the factory of file writers (it
    refuses when the repository cannot store files), and the path lookups remembered
    until the catalog changes."""

    catalog: Catalog
    tree: Tree
    chunks: ChunkStore
    chunk_lists: VerifiedChunkLists
    etag_key: bytes
    new_writer: Callable[[list[tuple[int, int, bytes]] | None], FileWriter]
    lookups: LookupCache[tuple[int, str], Entry | None] = field(default_factory=LookupCache)
