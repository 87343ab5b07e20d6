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
#: 2: data chunks may be sealed in segments (blob version 2, DESIGN.md §5.1); repositories
#: of format 1 are read as they are and keep getting version 1 blobs only, which older
#: davbackup reads too (a format-2 repository it refuses)
FORMAT_VERSION = 2
#: the first format whose writers seal large uncompressed chunks in segments
SEGMENTED_FROM = 2

CHUNKER_NAME = "fastcdc-2020-seeded"
CHUNK_ID_NAME = "blake3-keyed-256"
CIPHER_NAME = "aes-256-gcm-chunk-subkey"
COMPRESSION_NAME = "zstd"


KiB = 1024
MiB = 1024 * KiB

#: the ranges FastCDC (pyfastcdc) accepts: min_size, avg_size, max_size
MIN_SIZE_RANGE = (64, 1 * MiB)
AVG_SIZE_RANGE = (256, 4 * MiB)
MAX_SIZE_RANGE = (1 * KiB, 16 * MiB)


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC parameters, fixed for a repository when it is created.

    The defaults (128 KiB / 512 KiB / 2 MiB, normalization 2) are those of
    repositories created since format 1.1; older ones recorded 256 KiB / 1 MiB /
    4 MiB with normalization 1 in their config and keep them. Smaller chunks re-store
    less when a few KiB change inside a large file (``scripts/bench-storage``);
    normalization 2 keeps sizes close to the average, which matters because a
    scattered edit is more likely to hit a long chunk than a short one.
    """

    name: str = CHUNKER_NAME
    min_size: int = 128 * KiB
    avg_size: int = 512 * KiB
    max_size: int = 2 * MiB
    normalization: int = 2

    def __post_init__(self) -> None:
        bounds = ((self.min_size, MIN_SIZE_RANGE, "minimum"), (self.avg_size, AVG_SIZE_RANGE, "average"),
                  (self.max_size, MAX_SIZE_RANGE, "maximum"))
        for value, (low, high), what in bounds:
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{what} chunk size {value!r} is outside {low}..{high} bytes")
        if not self.min_size < self.avg_size < self.max_size:
            raise ValueError("chunk sizes must grow: minimum < average < maximum")
        if self.normalization not in (0, 1, 2, 3):
            raise ValueError(f"chunker normalization {self.normalization!r} is not 0, 1, 2 or 3")


#: what every repository created before the 512 KiB defaults recorded (and keeps)
LEGACY_CHUNKER = ChunkerParams(min_size=256 * KiB, avg_size=1 * MiB, max_size=4 * MiB, normalization=1)


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
            recorded = data["chunker"]
            # every field explicitly: a default must never stand in for a recorded value
            chunker = ChunkerParams(name=recorded["name"], min_size=recorded["min_size"],
                                    avg_size=recorded["avg_size"], max_size=recorded["max_size"],
                                    normalization=recorded["normalization"])
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
