"""davbackup: an encrypted, deduplicating store with a file-system view (the core).

The public facade of the core is what :data:`__all__` lists; the WebDAV adapter
(``provider/``), the command line (:mod:`davbackup.cli`) and the tools in
``scripts/`` should need nothing else. The names are loaded on first use, so that
``import davbackup.client`` does not load the store.

Layers (enforced by ``tests/core/test_core_layers.py``): the core — every module directly
in this package and :mod:`davbackup.maintenance` — never imports ``provider``,
``wsgidav``, ``cheroot`` or the HTTP client's libraries (``requests``, ``webdav3``,
``tqdm``). :mod:`davbackup.cli` wires the core and the server together;
:mod:`davbackup.client` is the HTTP client (the optional ``davbackup[client]``
dependencies). The on-disk format is specified in ``davbackup/DESIGN.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from davbackup.digests import Digests
    from davbackup.errors import (
        Conflict,
        DavBackupError,
        IntegrityError,
        Locked,
        NotFound,
        RangeError,
        StorageFull,
        UsageError,
    )
    from davbackup.fs import Entry, Namespace
    from davbackup.maintenance.check import check_repository
    from davbackup.maintenance.gc import collect_garbage
    from davbackup.maintenance.rebuild import rebuild_index
    from davbackup.maintenance.stats import repository_stats
    from davbackup.repository import Repository
    from davbackup.uploads import UploadSession

__version__ = "0.1.0"

_FACADE = {
    "Repository": "davbackup.repository",
    "Namespace": "davbackup.fs",
    "Entry": "davbackup.fs",
    "UploadSession": "davbackup.uploads",
    "Digests": "davbackup.digests",
    "check_repository": "davbackup.maintenance.check",
    "collect_garbage": "davbackup.maintenance.gc",
    "rebuild_index": "davbackup.maintenance.rebuild",
    "repository_stats": "davbackup.maintenance.stats",
    "DavBackupError": "davbackup.errors",
    "UsageError": "davbackup.errors",
    "NotFound": "davbackup.errors",
    "Conflict": "davbackup.errors",
    "Locked": "davbackup.errors",
    "RangeError": "davbackup.errors",
    "IntegrityError": "davbackup.errors",
    "StorageFull": "davbackup.errors",
}

__all__ = [
    "Conflict",
    "DavBackupError",
    "Digests",
    "Entry",
    "IntegrityError",
    "Locked",
    "Namespace",
    "NotFound",
    "RangeError",
    "Repository",
    "StorageFull",
    "UploadSession",
    "UsageError",
    "check_repository",
    "collect_garbage",
    "rebuild_index",
    "repository_stats",
]


def __getattr__(name: str) -> Any:
    module = _FACADE.get(name)
    if module is None:
        raise AttributeError(f"module 'davbackup' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
