"""A repository on disk, opened with its passphrase (DESIGN.md §1).

Layout::

    DIR/config.json      format version and algorithm names (not secret)
    DIR/keys/*.json      key slots wrapping the master key
    DIR/catalog.sqlite   the catalog (+ -wal, -shm)
    DIR/packs/xx/*.pack  pack files
    DIR/writer.lock      held (flock) by the one process that appends to packs

Modes: ``"rw"`` appends chunks and takes ``writer.lock`` exclusively (the server);
``"admin"`` changes the catalog only (users, keys, locks) and may run beside a server;
``"read"`` never writes packs.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path

from davbackup.catalog import Catalog
from davbackup.chunker import Chunker
from davbackup.chunkstore import ChunkStore
from davbackup.config import RepoConfig, write_atomic
from davbackup.errors import Locked, RepositoryError, UsageError
from davbackup.fs import Namespace
from davbackup.keys import MASTER_SIZE, KeyRing, MasterKeys
from davbackup.locks import LockTable
from davbackup.offload import Offloader
from davbackup.pack import BlobCodec
from davbackup.storage import LocalPackStorage
from davbackup.tree import Tree
from davbackup.uploads import UploadManager
from davbackup.users import UserDirectory
from davbackup.writer import FileWriter
from davbackup import crypto

MODES = ("rw", "admin", "read")


class Repository:
    def __init__(self, root: Path, config: RepoConfig, keys: MasterKeys, mode: str) -> None:
        if mode not in MODES:
            raise UsageError(f"unknown repository mode {mode!r}")
        self.root = root
        self.config = config
        self.keys = keys
        self.mode = mode
        self._lock_fd: int | None = None
        if mode == "rw":
            self._lock_fd = self._take_writer_lock()
        try:
            self.catalog = Catalog(root / "catalog.sqlite")
            self.tree = Tree(keys.name_key(), keys.name_hash_key())
            self.storage = LocalPackStorage(root / "packs")
            self.codec = BlobCodec(keys.chunk_subkey_base(), keys.chunk_id_key(), config.compression_level)
            self.chunker = Chunker(config.chunker, keys.chunker_seed())
            self.chunks = ChunkStore(self.catalog, self.storage, self.codec, config.pack_target_size, mode == "rw")
            self.users = UserDirectory(self.catalog, self.tree)
            self.offloader = Offloader(threads=min(2, os.cpu_count() or 1))
            self.locks = LockTable(self.catalog)
        except BaseException:
            self._release_writer_lock()
            raise
        self.uploads = UploadManager(self)

    # -- creation and opening ------------------------------------------------------

    @classmethod
    def init(cls, root: Path, passphrase: str, *, config: RepoConfig | None = None) -> "Repository":
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            raise UsageError(f"{root}: directory exists and is not empty")
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = config or RepoConfig(repo_id=secrets.token_hex(16))
        master = MasterKeys(crypto.random_bytes(MASTER_SIZE))
        KeyRing(root / "keys", config.repo_id).add(master, passphrase, label="initial")
        (root / "packs").mkdir(mode=0o700)
        Catalog(root / "catalog.sqlite", create=True).close()
        write_atomic(root / "config.json", config.to_json().encode("utf-8"), 0o644)
        return cls.open(root, passphrase)

    @classmethod
    def read_config(cls, root: Path) -> RepoConfig:
        path = Path(root) / "config.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise RepositoryError(f"{root}: not a davbackup repository (no config.json)") from exc
        except OSError as exc:
            raise RepositoryError(f"{path}: cannot read ({exc.strerror})") from exc
        return RepoConfig.from_json(text, path)

    @classmethod
    def open(cls, root: Path, passphrase: str, *, mode: str = "rw") -> "Repository":
        root = Path(root)
        config = cls.read_config(root)
        master, _slot = KeyRing(root / "keys", config.repo_id).unlock(passphrase)
        return cls(root, config, master, mode)

    def keyring(self) -> KeyRing:
        return KeyRing(self.root / "keys", self.config.repo_id)

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
        """Whether some process holds the writer lock (false if it is us)."""
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

    # -- namespaces and files --------------------------------------------------------

    def namespace(self, user: str) -> Namespace:
        """The user's namespace, looked up afresh (users may change from another process)."""
        return Namespace(self, user, self.users.root_id(user))

    def new_writer(self, chunks: list[tuple[int, int, bytes]] | None = None) -> FileWriter:
        if self.mode != "rw":
            raise RepositoryError(f"repository opened in {self.mode!r} mode cannot store files")
        return FileWriter(self.chunks, self.chunker, self.keys.etag_key(), chunks=chunks, offloader=self.offloader)

    def close(self) -> None:
        try:
            self.offloader.close()
            self.chunks.close()
            self.catalog.close()
        finally:
            self._release_writer_lock()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
