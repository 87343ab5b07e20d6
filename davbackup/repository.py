"""A repository on disk, opened with its passphrase (DESIGN.md §1).

Layout::

    DIR/config.json      format version and algorithm names (not secret)
    DIR/keys/*.json      key slots wrapping the master key
    DIR/catalog.sqlite   the catalog (+ -wal, -shm)
    DIR/packs/xx/*.pack  pack files
    DIR/writer.lock      held (flock) by the one process that appends to packs

With packs in an S3-compatible store (``init --packs s3://bucket/prefix``), config,
key slots and packs are objects there; ``DIR/packs.url`` says where (see
:mod:`davbackup.location`).

With the catalog in PostgreSQL (``--catalog postgresql://…``, :mod:`davbackup.catalog_pg`)
several processes on several machines serve one repository: the directory is then
only this process's local state (spools of packs being written, the pack cache) and
defaults to a private temporary directory; the writer lock and gc's lock become
PostgreSQL advisory locks.

Modes: ``"rw"`` appends chunks and takes ``writer.lock`` exclusively (the server);
``"admin"`` changes the catalog only (users, keys, locks) and may run beside a server;
``"read"`` never writes packs.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from davbackup import clock, crypto, faults, tree_bulk
from davbackup.catalog import SCHEMA_VERSION, Catalog, read_meta
from davbackup.checkpoint import has_checkpoint, write_checkpoint
from davbackup.chunker import Chunker
from davbackup.chunkstore import ChunkStore
from davbackup.config import SEGMENTED_FROM, RepoConfig
from davbackup.errors import Locked, RepositoryError, UsageError
from davbackup.file_store import FileStore
from davbackup.fs import Namespace
from davbackup.history import HistoryUsage, history_usage
from davbackup.journal import Journal
from davbackup.journal_catchup import catch_up
from davbackup.keys import MASTER_SIZE, KeyRing, MasterKeys
from davbackup.location import PackLocation, record_catalog_url, recorded_catalog_url, resolve_packs_url
from davbackup.locks import LockTable
from davbackup.offload import Offloader
from davbackup.pack import SEGMENT_SHIFT, BlobCodec
from davbackup.reserve import SpaceGuard, SpaceReserve
from davbackup.tree import Tree, authenticate_rows
from davbackup.upload_settings import settings_at_open
from davbackup.uploads import UploadManager
from davbackup.users import UserDirectory
from davbackup.versions import VerifiedChunkLists
from davbackup.writer import FileWriter

MODES = ("rw", "admin", "read")
#: with a shared catalog, a large COPY staged this long ago is another node's crash debris
STAGING_GRACE = 3600.0


class Repository:
    def __init__(
        self, root: Path, config: RepoConfig, keys: MasterKeys, mode: str, location: PackLocation | None = None,
        catalog_url: str | None = None, *, temporary_root: bool = False, catalog_path: Path | None = None,
    ) -> None:
        if mode not in MODES:
            raise UsageError(f"unknown repository mode {mode!r}")
        self.root = root
        self.location = location or PackLocation(root)
        self.config = config
        self.keys = keys
        self.mode = mode
        self.catalog_url = catalog_url
        self._temporary_root = temporary_root
        self._lock_fd: int | None = None
        if mode == "rw" and catalog_url is None:
            self._lock_fd = self._take_writer_lock()
        try:
            self.catalog = self._open_catalog(catalog_url, mode, catalog_path)
            self.tree = Tree(keys.name_key(), keys.name_hash_key())
            self._authenticate_rows()
            self.storage = self.location.storage(writer=mode == "rw")
            fault_plan = faults.plan_from_environment()  # tests only: DAVBACKUP_TEST_FAULTS
            if fault_plan is not None:
                self.storage = faults.FaultyPackStorage(self.storage, fault_plan)
                self.catalog.fault_hook = fault_plan.commit_hook
            shift = SEGMENT_SHIFT if config.version >= SEGMENTED_FROM else 0
            self.codec = BlobCodec(keys.chunk_subkey_base(), keys.chunk_id_key(), config.compression_level, shift)
            self.chunker = Chunker(config.chunker, keys.chunker_seed())
            if mode != "read" and catalog_url is None:
                # commits a power cut took from the catalog, back from the journal before
                # anything is written (§20.7; a no-op once a server started in this boot)
                catch_up(self.catalog, self.storage, keys.journal_key(), self.codec)
            self.chunks = ChunkStore(self.catalog, self.storage, self.codec, config.pack_target_size, mode == "rw")
            self.chunk_lists = VerifiedChunkLists()  # chunk lists verified at open (versions.py)
            self.journal: Journal | None = None
            if mode != "read":
                self._start_journal()
            self.users = UserDirectory(self.catalog, self.tree)
            self.offloader = Offloader(threads=min(2, os.cpu_count() or 1))
            self.locks = LockTable(self.catalog)
        except BaseException:
            self._release_writer_lock()
            raise
        self.file_store = FileStore(self.catalog, self.tree, self.chunks, self.chunk_lists, keys.etag_key(),
                                    self.new_writer)
        self.uploads = UploadManager(self.file_store, self.namespace, path_key=keys.name_hash_key(),
                                     seal_key=keys.name_key(), settings=settings_at_open(self.catalog.reader()))
        if mode == "rw":
            # a large COPY or DELETE cut off by a crash: nothing else can be building one now
            # (unless another node serves the shared catalog: it may be building one,
            # so only copies staged longer ago than gc's grace period are dropped)
            staged_before = clock.now() - STAGING_GRACE if self.writer_active() else None
            tree_bulk.finish_leftovers(self.catalog, staged_before=staged_before, best_effort=True)
        #: disk space kept back for DELETE and gc on a full disk; the server sizes and takes it
        self.reserve = SpaceReserve(root)
        self.space = SpaceGuard(self.reserve, self.storage, self.chunks.retry_seals if mode == "rw" else None)

    def _open_catalog(self, catalog_url: str | None, mode: str, catalog_path: Path | None = None) -> Catalog:
        if catalog_url is None:
            return Catalog(catalog_path or self.root / "catalog.sqlite")
        from davbackup.catalog_pg import PgCatalog

        catalog = PgCatalog(catalog_url, writer=mode == "rw")
        try:
            catalog.check_repository(self.config.repo_id, bind=mode != "read")
        except BaseException:
            catalog.close()
            raise
        return catalog

    def _start_journal(self) -> None:
        """Every durable catalog change of this process goes to the journal in the packs
        (DESIGN.md §20); the writer first syncs records some process committed but may
        not have synced, and a catalog that has no checkpoint yet (new, or upgraded from
        schema 3) gets one, so the packs alone are a complete backup from now on."""
        storage = self.storage
        if isinstance(storage, faults.FaultyPackStorage):
            storage = storage.for_journal()  # tests: faults aimed at the journal alone
        if self.catalog.shared:  # PostgreSQL: every process writes its records before COMMIT
            from davbackup.journal_pg import PgJournal

            self.journal = PgJournal(storage, self.keys.journal_key(), SCHEMA_VERSION, self.config.pack_target_size)
        else:
            self.journal = Journal(storage, self.keys.journal_key(), SCHEMA_VERSION, self.config.pack_target_size,
                                   early=self.mode == "rw")
        self.catalog.attach_journal(self.journal)
        if self.mode == "rw" and not self.catalog.shared:
            # Records a process committed but did not live to sync. Only the writer does
            # this: an admin command beside a running server would copy the server's
            # newest records once more each time (harmless, but for nothing).
            self.journal.flush_outbox(self.catalog.write)
        if not has_checkpoint(self.catalog):
            write_checkpoint(self.catalog, self.storage, self.keys.journal_key())

    def _authenticate_rows(self) -> None:
        """A catalog from before row authentication is upgraded on its first writable
        open; read-only opens accept its old sealing without changing it."""
        upgraded = read_meta(self.catalog.reader(), "row_auth") is not None
        if upgraded:
            return
        if self.mode == "read":
            self.tree.legacy_names = True
            return
        self.catalog.write(lambda conn: authenticate_rows(conn, self.tree))

    # -- creation and opening ------------------------------------------------------

    @classmethod
    def init(
        cls, root: Path | None, passphrase: str, *, config: RepoConfig | None = None, packs_url: str | None = None,
        catalog_url: str | None = None,
    ) -> "Repository":
        """Create a repository in ``root``; with ``packs_url`` (``s3://bucket/prefix``)
        its packs, config and key slots go to that object store; with ``catalog_url``
        (``postgresql://…``) the catalog is created in that (empty) database and
        ``root`` is only local state (a temporary directory if None)."""
        temporary = root is None
        if root is None:
            if catalog_url is None or packs_url is None:
                raise UsageError("a repository needs a directory (--repo), or --catalog and --packs")
            root = Path(tempfile.mkdtemp(prefix="davbackup-node-"))
        root = Path(root)
        if not temporary and root.exists() and any(root.iterdir()):
            raise UsageError(f"{root}: directory exists and is not empty")
        location = PackLocation(root, packs_url)
        location.check_new()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)  # an existing empty directory keeps its mode otherwise
        config = config or RepoConfig(repo_id=secrets.token_hex(16))
        if catalog_url is not None:
            from davbackup.catalog_pg import PgCatalog

            catalog = PgCatalog(catalog_url, create=True)  # refuses a database that holds one
            try:
                catalog.check_repository(config.repo_id, bind=True)
            finally:
                catalog.close()
        location.prepare()
        master = MasterKeys(crypto.random_bytes(MASTER_SIZE))
        KeyRing(location.meta, config.repo_id).add(master, passphrase, label="initial")
        if catalog_url is None:
            catalog_path = root / "catalog.sqlite"
            os.close(os.open(catalog_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            Catalog(catalog_path, create=True).close()  # SQLite gives -wal/-shm the same mode
        location.meta.write("config.json", config.to_json().encode("utf-8"), 0o644)  # last: now it is one
        if not temporary:
            location.record()
            if catalog_url is not None:
                record_catalog_url(root, catalog_url)
        return cls(root, config, master, "rw", location, catalog_url, temporary_root=temporary)

    @classmethod
    def read_config(cls, root: Path, location: PackLocation | None = None) -> RepoConfig:
        location = location or PackLocation(Path(root))
        where = location.meta.where("config.json")
        try:
            text = location.meta.read("config.json").decode("utf-8")
        except FileNotFoundError as exc:
            raise RepositoryError(f"{location.describe()}: not a davbackup repository (no config.json)") from exc
        except OSError as exc:
            raise RepositoryError(f"{where}: cannot read ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise RepositoryError(f"{where}: config is not UTF-8 text") from exc
        return RepoConfig.from_json(text, where)

    @classmethod
    def open(
        cls,
        root: Path | None,
        passphrase: str,
        *,
        mode: str = "rw",
        packs_url: str | None = None,
        packs_cache_bytes: int = 0,
        catalog_url: str | None = None,
    ) -> "Repository":
        """Open the repository in ``root``. Where its packs are is recorded there;
        ``packs_url``, if given, must agree. ``packs_cache_bytes`` bounds the local
        cache of packs from an object store (0: no cache). With ``catalog_url`` the
        catalog is that PostgreSQL database, the packs are at ``packs_url`` (or in
        ``root``), and ``root`` is this process's local state (a temporary directory
        if None)."""
        temporary = root is None
        if catalog_url is None and root is not None:
            catalog_url = recorded_catalog_url(Path(root))
            if catalog_url is not None:
                packs_url = resolve_packs_url(Path(root), packs_url)
        if catalog_url is None:
            if root is None:
                raise UsageError("no repository: give --repo DIR, or --catalog URL and --packs URL")
            root = Path(root)
            url = resolve_packs_url(root, packs_url)
        else:
            if root is None and packs_url is None:
                raise UsageError("--catalog needs --packs (s3://bucket/prefix) or --repo (packs in that directory)")
            if root is None:
                root = Path(tempfile.mkdtemp(prefix="davbackup-node-"))
            root = Path(root)
            url = packs_url
        try:
            location = PackLocation(root, url, cache_bytes=packs_cache_bytes)
            config = cls.read_config(root, location)
            master, _slot = KeyRing(location.meta, config.repo_id).unlock(passphrase)
            return cls(root, config, master, mode, location, catalog_url, temporary_root=temporary)
        except BaseException:
            if temporary:
                shutil.rmtree(root, ignore_errors=True)
            raise

    @classmethod
    def unlock(
        cls, root: Path, passphrase: str, packs_url: str | None = None, packs_cache_bytes: int = 0
    ) -> tuple[PackLocation, RepoConfig, MasterKeys]:
        """Where the packs are, the config and the keys, without opening the catalog."""
        root = Path(root)
        url = resolve_packs_url(root, packs_url)
        location = PackLocation(root, url, cache_bytes=packs_cache_bytes)
        config = cls.read_config(root, location)
        master, _slot = KeyRing(location.meta, config.repo_id).unlock(passphrase)
        return location, config, master

    def keyring(self) -> KeyRing:
        return KeyRing(self.location.meta, self.config.repo_id)

    # -- the writer lock -----------------------------------------------------------

    def _take_writer_lock(self) -> int:
        fd = os.open(self.root / "writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise Locked(
                f"{self.root}: another process (a running server?) is writing to this repository"
            ) from exc
        return fd

    def _release_writer_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def writer_active(self) -> bool:
        """Whether some process holds the writer lock (false if it is us); with a
        shared catalog, whether any other node is serving."""
        if self.catalog.shared:
            return bool(self.catalog.writers_active())  # type: ignore[attr-defined]
        if self._lock_fd is not None:
            return False
        fd = os.open(self.root / "writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold the repository-wide lock ``name`` (e.g. ``"gc"``) or raise :class:`Locked`:
        a file lock in the directory, or a PostgreSQL advisory lock across the cluster."""
        if self.catalog.shared:
            if not self.catalog.try_lock(name):
                raise Locked(f"{self.location.describe()}: another {name} is running")
            try:
                yield
            finally:
                self.catalog.unlock(name)
            return
        fd = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise Locked(f"{self.root}: another {name} is running") from exc
            yield
        finally:
            os.close(fd)

    # -- namespaces and files --------------------------------------------------------

    def namespace(self, user: str, root_id: int | None = None) -> Namespace:
        """The user's namespace, looked up afresh (users may change from another process);
        ``root_id``: the user's root as just read with their password (no second query)."""
        return Namespace(self.file_store, user, self.users.root_id(user) if root_id is None else root_id)

    def history_usage(self, root_id: int) -> HistoryUsage:
        """What the history of the user whose root is ``root_id`` holds beyond the live tree."""
        return history_usage(self.catalog, root_id)

    def new_writer(self, chunks: list[tuple[int, int, bytes]] | None = None) -> FileWriter:
        if self.mode != "rw":
            raise RepositoryError(f"repository opened in {self.mode!r} mode cannot store files")
        return FileWriter(self.chunks, self.chunker, self.keys.etag_key(), chunks=chunks, offloader=self.offloader)

    def close(self) -> None:
        try:
            self.offloader.close()
            if self.journal is not None:
                self.journal.close(self.catalog.write)
            self.chunks.close()
            self.catalog.close()
        finally:
            self._release_writer_lock()
            if self._temporary_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
