"""Where a repository keeps its packs, ``config.json`` and key slots (DESIGN.md §1, §6.1).

By default all of them are in the repository directory. With ``--packs
s3://bucket/prefix`` (given to ``init``) they are objects in an S3-compatible store,
while the catalog (SQLite), the writer lock, the spools of packs being written and
the optional pack cache stay in the directory. ``init`` records the URL in
``DIR/packs.url``, so every later command finds the packs from the directory alone.
"""

from __future__ import annotations

from pathlib import Path

from davbackup.config import write_atomic
from davbackup.errors import UsageError
from davbackup.metafiles import LocalFiles, MetaFiles, S3Files
from davbackup.storage import LocalPackStorage, PackStorage

PACKS_URL_FILE = "packs.url"
CATALOG_URL_FILE = "catalog.url"  # the PostgreSQL catalog of a repository directory (0600: may hold a password)


def recorded_packs_url(root: Path) -> str | None:
    try:
        return (root / PACKS_URL_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def recorded_catalog_url(root: Path) -> str | None:
    try:
        return (root / CATALOG_URL_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def record_catalog_url(root: Path, url: str) -> None:
    write_atomic(root / CATALOG_URL_FILE, (url + "\n").encode("utf-8"), 0o600)


def resolve_packs_url(root: Path, given: str | None) -> str | None:
    """The pack location of an existing repository; ``given`` must agree with it."""
    recorded = recorded_packs_url(root)
    if given is None:
        return recorded
    from davbackup.s3 import S3Url

    wanted = str(S3Url.parse(given))
    if recorded is None:
        raise UsageError(f"{root}: this repository keeps its packs in the directory, not at {wanted}")
    if recorded != wanted:
        raise UsageError(f"{root}: this repository keeps its packs at {recorded}, not at {wanted}")
    return recorded


class PackLocation:
    """The pack storage and the small files of one repository."""

    def __init__(self, root: Path, url: str | None = None, *, cache_bytes: int = 0) -> None:
        self.root = root
        self.url = url
        self.cache_bytes = cache_bytes
        self._store = None
        if url is None:
            self.meta: MetaFiles = LocalFiles(root)
        else:
            from davbackup.s3 import ObjectStore, S3Url

            self._store = ObjectStore(S3Url.parse(url))
            self._store.check_bucket()
            self.url = str(self._store.url)
            self.meta = S3Files(self._store)

    def describe(self) -> str:
        return str(self.root) if self.url is None else f"{self.root} (packs at {self.url})"

    def check_new(self) -> None:
        """At init, before anything is written: refuse to overwrite a repository."""
        if self.url is None:
            return
        try:
            self.meta.read("config.json")
        except FileNotFoundError:
            return
        raise UsageError(f"{self.url} already holds a davbackup repository")

    def prepare(self) -> None:
        """At init, once the directory exists: create what the location needs."""
        if self.url is None:
            (self.root / "packs").mkdir(mode=0o700)

    def record(self) -> None:
        """At init, after config.json is written: remember the URL in the directory."""
        if self.url is not None:
            write_atomic(self.root / PACKS_URL_FILE, (self.url + "\n").encode("utf-8"), 0o644)

    def storage(self, *, writer: bool = False) -> PackStorage:
        """``writer``: the caller holds the repository's writer lock."""
        if self._store is None:
            return LocalPackStorage(self.root / "packs")
        from davbackup.storage_cache import PackCache
        from davbackup.storage_s3 import S3PackStorage

        cache = PackCache(self.root / "cache", self.cache_bytes) if self.cache_bytes > 0 else None
        return S3PackStorage(self._store, self.root / "spool", cache, writer=writer)
