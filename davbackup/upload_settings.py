"""The settings that decide an upload session's fate (DESIGN.md §13).

They are stored once, in catalog ``meta`` key ``uploads``: the server records its
configuration there when it starts, and every other process (``davbackup gc``
expiring idle sessions) reads them from there, so a server configured for a 48 h
lifetime never loses sessions to a gc that assumed 24 h.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from davbackup.catalog import read_meta, write_meta
from davbackup.errors import UsageError

if TYPE_CHECKING:
    from davbackup.catalog import Catalog

DEFAULT_TTL = 24 * 3600.0
CHECKPOINT_BYTES = 64 * 1024 * 1024
#: open (unexpired) sessions one user may hold
MAX_SESSIONS_PER_USER = 256
#: the largest length an upload may declare (16 TiB)
MAX_LENGTH = 16 * 1024**4

META_KEY = "uploads"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadSettings:
    """What the server was configured with; recorded in ``meta`` so gc agrees."""

    #: seconds an unfinished session may stay idle before it expires
    session_ttl: float = DEFAULT_TTL
    #: bytes of a long request between two durable checkpoints of its session
    checkpoint_bytes: int = CHECKPOINT_BYTES
    #: open (unexpired) sessions one user may hold
    max_sessions_per_user: int = MAX_SESSIONS_PER_USER
    #: the largest length an upload may declare
    max_length: int = MAX_LENGTH

    def __post_init__(self) -> None:
        if not self.session_ttl > 0 or self.checkpoint_bytes < 1 or self.max_sessions_per_user < 1 \
                or self.max_length < 1:
            raise UsageError(f"invalid upload settings {self}: every value must be positive")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "UploadSettings":
        try:
            data = json.loads(text)
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError, AttributeError) as exc:
            raise UsageError(f"catalog meta {META_KEY!r} is not valid upload settings: {exc}") from exc


def load_settings(conn: sqlite3.Connection) -> UploadSettings:
    """The settings the server last recorded (the defaults if none ever did)."""
    text = read_meta(conn, META_KEY)
    return UploadSettings.from_json(text) if text is not None else UploadSettings()


def settings_at_open(conn: sqlite3.Connection) -> UploadSettings:
    """:func:`load_settings` for a repository being opened: a damaged ``meta`` row gives
    the defaults and a warning (it must not keep check or restore from opening)."""
    try:
        return load_settings(conn)
    except UsageError as exc:
        _log.warning("%s; using the default upload settings", exc)
        return UploadSettings()


def store_settings(catalog: "Catalog", settings: UploadSettings) -> bool:
    """Record ``settings`` (one transaction, only if they differ); True if written."""
    if load_settings(catalog.reader()) == settings:
        return False
    text = settings.to_json()
    catalog.write(lambda conn: write_meta(conn, META_KEY, text))
    return True
