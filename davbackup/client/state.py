"""The client's memory of what it transferred, so unchanged files are not sent again.

One SQLite file (default ``$XDG_STATE_HOME/davbackup/client.sqlite``, i.e.
``~/.local/state/davbackup/client.sqlite``). Rows are keyed by server origin, user
and remote path.

``uploaded``: after a completed upload, the local size, mtime (ns) and SHA-256 and the
ETag the server answered. A later upload skips the file when the server still shows
that ETag and size (one PROPFIND per folder) and the local file has the same size and
mtime — or the same size and SHA-256 (a touched but unchanged file).

``downloaded``: the ETag and local size/mtime after a completed download; the same
test skips it next time. ``partial``: the ETag of the version a ``.davbackup-part``
file holds, so a resumed download asks for the rest only if the remote file is
still that version (``If-Range``).

An interrupted *upload* needs no local record: the server keeps the session, keyed by
path, and identifies the content by the ``Repr-Digest`` the client sends with every
part; the client asks the server for its offset.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploaded(key TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,
                                    sha256 TEXT, etag TEXT, at REAL);
CREATE TABLE IF NOT EXISTS downloaded(key TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,
                                      etag TEXT, at REAL);
CREATE TABLE IF NOT EXISTS partial(key TEXT PRIMARY KEY, etag TEXT, at REAL);
"""


#: records committed together (or after GROUP_SECONDS, whichever comes first)
GROUP = 256
GROUP_SECONDS = 2.0


def default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "davbackup" / "client.sqlite"


@dataclass(frozen=True)
class UploadRecord:
    size: int
    mtime_ns: int
    sha256: str
    etag: str


@dataclass(frozen=True)
class DownloadRecord:
    size: int
    mtime_ns: int
    etag: str


class ClientState:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_state_path()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.executescript(SCHEMA)
        # Losing the last records in a crash only means checking those files again, so
        # records are committed in groups (not one fsync per file of a tree).
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.RLock()
        self._pending = 0
        self._since = time.monotonic()

    @staticmethod
    def key(origin: str, user: str, remote_path: str) -> str:
        return f"{origin}|{user}|{remote_path}"

    def close(self) -> None:
        with self._lock:
            self.flush()
            self._db.close()

    def flush(self) -> None:
        """Commit the records written so far."""
        with self._lock:
            if self._db.in_transaction:
                self._db.execute("COMMIT")
            self._pending = 0
            self._since = time.monotonic()

    def _write(self, sql: str, params: tuple) -> None:
        with self._lock:
            if not self._db.in_transaction:
                self._db.execute("BEGIN")
            self._db.execute(sql, params)
            self._pending += 1
            if self._pending >= GROUP or time.monotonic() - self._since > GROUP_SECONDS:
                self.flush()

    def _read(self, sql: str, params: tuple) -> tuple | None:
        with self._lock:
            row: tuple | None = self._db.execute(sql, params).fetchone()
            return row

    # --- uploads -------------------------------------------------------------------

    def uploaded(self, key: str) -> UploadRecord | None:
        row = self._read("SELECT size, mtime_ns, sha256, etag FROM uploaded WHERE key=?", (key,))
        return UploadRecord(*row) if row else None

    def record_upload(self, key: str, record: UploadRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO uploaded(key, size, mtime_ns, sha256, etag, at) VALUES (?, ?, ?, ?, ?, ?)",
            (key, record.size, record.mtime_ns, record.sha256, record.etag, time.time()),
        )

    # --- downloads -----------------------------------------------------------------

    def downloaded(self, key: str) -> DownloadRecord | None:
        row = self._read("SELECT size, mtime_ns, etag FROM downloaded WHERE key=?", (key,))
        return DownloadRecord(*row) if row else None

    def record_download(self, key: str, record: DownloadRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO downloaded(key, size, mtime_ns, etag, at) VALUES (?, ?, ?, ?, ?)",
            (key, record.size, record.mtime_ns, record.etag, time.time()),
        )

    def partial_etag(self, key: str) -> str | None:
        row = self._read("SELECT etag FROM partial WHERE key=?", (key,))
        return row[0] if row else None

    def set_partial(self, key: str, etag: str | None) -> None:
        if etag is None:
            self._write("DELETE FROM partial WHERE key=?", (key,))
        else:
            self._write("INSERT OR REPLACE INTO partial(key, etag, at) VALUES (?, ?, ?)", (key, etag, time.time()))
        self.flush()  # a resumed download relies on it
