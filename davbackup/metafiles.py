"""Where a repository keeps its small files: ``config.json`` and ``keys/<slot>.json``.

They live beside the packs, so that the pack store plus a passphrase is a complete
backup (DESIGN.md §1): in the repository directory for the local default, or as
objects under ``s3://bucket/prefix/`` when packs are in an object store. Names are
relative and use ``/`` (``"keys/1a2b3c4d.json"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from davbackup.config import fsync_dir, write_atomic
from davbackup.s3 import ObjectMissing, ObjectStore


class MetaFiles(Protocol):
    def read(self, name: str) -> bytes:
        """The file's bytes; :class:`FileNotFoundError` if it does not exist."""
        ...

    def write(self, name: str, data: bytes, mode: int = 0o600) -> None:
        """Replace the file atomically and durably (all or nothing, synced)."""
        ...

    def list(self, folder: str, suffix: str) -> list[str]:
        """Names in ``folder`` ending in ``suffix``, sorted."""
        ...

    def delete(self, name: str) -> None: ...

    def where(self, name: str) -> Path | str:
        """Where the file is, for messages: a Path for local files, else a URL."""
        ...


class LocalFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, data: bytes, mode: int = 0o600) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, data, mode)

    def list(self, folder: str, suffix: str) -> list[str]:
        directory = self.root / folder
        if not directory.is_dir():
            raise FileNotFoundError(directory)
        return sorted(f"{folder}/{p.name}" for p in directory.iterdir() if p.name.endswith(suffix))

    def delete(self, name: str) -> None:
        path = self.root / name
        path.unlink()
        fsync_dir(path.parent)

    def where(self, name: str) -> Path:
        return self.root / name


class S3Files:
    """Small files as objects; a PUT is atomic and durable once answered."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def read(self, name: str) -> bytes:
        try:
            return self.store.get(name)
        except ObjectMissing as exc:
            raise FileNotFoundError(self.where(name)) from exc

    def write(self, name: str, data: bytes, mode: int = 0o600) -> None:
        self.store.put(name, data)

    def list(self, folder: str, suffix: str) -> list[str]:
        return sorted(o.key for o in self.store.list(folder + "/") if o.key.endswith(suffix))

    def delete(self, name: str) -> None:
        self.store.delete([name])

    def where(self, name: str) -> str:
        return f"{self.store.url}{name}"
