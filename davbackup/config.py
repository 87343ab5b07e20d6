"""The repository's ``config.json``: format version and algorithm names (DESIGN.md §2).

The config is not secret. Algorithms are recorded under stable names so that a
repository written today is read the same way by every later version; an unknown
name or a newer format version is refused instead of guessed at.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from davbackup.errors import RepositoryError, UnsupportedFormat

FORMAT_NAME = "davbackup"
FORMAT_VERSION = 1

CHUNKER_NAME = "fastcdc-2020-seeded"
CHUNK_ID_NAME = "blake3-keyed-256"
CIPHER_NAME = "aes-256-gcm-chunk-subkey"
COMPRESSION_NAME = "zstd"


@dataclass(frozen=True)
class ChunkerParams:
    name: str = CHUNKER_NAME
    min_size: int = 256 * 1024
    avg_size: int = 1024 * 1024
    max_size: int = 4 * 1024 * 1024
    normalization: int = 1


@dataclass(frozen=True)
class RepoConfig:
    repo_id: str
    version: int = FORMAT_VERSION
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    chunk_id: str = CHUNK_ID_NAME
    cipher: str = CIPHER_NAME
    compression: str = COMPRESSION_NAME
    compression_level: int = 3
    pack_target_size: int = 64 * 1024 * 1024

    def to_json(self) -> str:
        data = {"format": FORMAT_NAME, **asdict(self)}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path | str) -> "RepoConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RepositoryError(f"{where}: config is not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise RepositoryError(f"{where}: not a davbackup repository config")
        version = data.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise UnsupportedFormat(
                f"{where}: repository format version {version} is newer than this davbackup "
                f"supports ({FORMAT_VERSION}); upgrade davbackup"
            )
        try:
            chunker = ChunkerParams(**data["chunker"])
            config = cls(
                repo_id=str(data["repo_id"]),
                version=version,
                chunker=chunker,
                chunk_id=data["chunk_id"],
                cipher=data["cipher"],
                compression=data["compression"],
                compression_level=int(data["compression_level"]),
                pack_target_size=int(data["pack_target_size"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RepositoryError(f"{where}: malformed config ({exc})") from exc
        known = (
            (config.chunker.name, CHUNKER_NAME),
            (config.chunk_id, CHUNK_ID_NAME),
            (config.cipher, CIPHER_NAME),
            (config.compression, COMPRESSION_NAME),
        )
        for got, expected in known:
            if got != expected:
                raise UnsupportedFormat(f"{where}: unknown algorithm {got!r}")
        return config


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` durably: temp file, fsync, rename, fsync directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
