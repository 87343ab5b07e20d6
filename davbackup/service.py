"""What the WebDAV server may use of a repository: the provider layer's view of the core.

``provider/`` is handed a :class:`DavService`, not the whole
:class:`~davbackup.repository.Repository`: the user directory, the namespaces, upload
sessions, WebDAV locks, the space guard, a user's history usage, and of the catalog
only whether it is shared, a read probe and the lock epoch. mypy checks the provider against this protocol, so
reaching past it (into the chunk store, the keys, the packs, the catalog's tables) is
a type error there; :class:`Repository` implements it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from davbackup.fs import Namespace
    from davbackup.history import HistoryUsage
    from davbackup.locks import LockTable
    from davbackup.reserve import SpaceGuard, SpaceReserve
    from davbackup.uploads import UploadManager
    from davbackup.users import UserDirectory


class CatalogView(Protocol):
    """The catalog as the server sees it."""

    @property
    def shared(self) -> bool:
        """Whether other processes on other machines share it (PostgreSQL)."""
        ...

    def reader(self) -> sqlite3.Connection:
        """A read connection (the health check runs ``SELECT 1`` on it)."""
        ...

    def lock_epoch(self) -> int:
        """A shared catalog's count of changes to the WebDAV locks (davbackup/catalog_pg.py)."""
        ...


class DavService(Protocol):
    @property
    def root(self) -> Path:
        """This node's repository directory (free space is reported for it)."""
        ...

    @property
    def catalog(self) -> CatalogView: ...

    @property
    def users(self) -> UserDirectory: ...

    @property
    def uploads(self) -> UploadManager: ...

    @property
    def locks(self) -> LockTable: ...

    @property
    def reserve(self) -> SpaceReserve: ...

    @property
    def space(self) -> SpaceGuard: ...

    def namespace(self, user: str, root_id: int | None = None) -> Namespace:
        """One user's files and folders (davbackup/fs.py); ``root_id``: the user's root as
        just read with their password (``User.root_id``), else it is looked up."""
        ...

    def history_usage(self, root_id: int) -> HistoryUsage:
        """What one user's history holds beyond the live tree (``root_id``: its
        namespace's :attr:`~davbackup.fs.Namespace.root_id`), for the web page."""
        ...
