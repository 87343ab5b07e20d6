"""Downloading files and trees, resuming partial files with ranged GETs.

A file is written to ``NAME.davbackup-part`` beside its destination and renamed when
complete (its modification time set from the server's). A part file left by an
interrupted run is continued with ``Range: bytes=N-`` and ``If-Range: "<etag>"``: if
the remote file changed meanwhile the server sends it whole (200) and the part file
starts over. Within one run, a dropped connection is retried with backoff from the
bytes already on disk.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import requests

from davbackup.client.errors import RETRYABLE, ConnectionFailed, ServerError, error_for
from davbackup.client.progress import Progress
from davbackup.client.remote import Remote, RemoteEntry
from davbackup.client.retry import Backoff, retry_after_seconds
from davbackup.client.state import ClientState, DownloadRecord
from davbackup.errors import DavBackupError, NotFound

_log = logging.getLogger(__name__)

PART_SUFFIX = ".davbackup-part"
BLOCK = 1024 * 1024


@dataclass
class DownloadOptions:
    retries: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    force: bool = False


@dataclass
class DownloadStats:
    files_received: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    bytes_received: int = 0
    resumed: int = 0
    errors: list[DavBackupError] = field(default_factory=list)


class Downloader:
    def __init__(self, remote: Remote, state: ClientState | None, options: DownloadOptions | None = None,
                 progress: Progress | None = None) -> None:
        self.remote = remote
        self.state = state
        self.options = options or DownloadOptions()
        self.progress = progress or Progress(False)
        self.stats = DownloadStats()

    def download(self, remote_path: str, local: Path) -> None:
        """A remote folder's contents into the folder ``local`` (a mirror: running it again
        is idempotent); a remote file into ``local/NAME`` if ``local`` is a folder, else to
        ``local``."""
        entry = self.remote.stat(remote_path)
        if entry is None:
            raise NotFound(f"{self.remote.origin}{remote_path}: no such file or folder")
        if entry.is_dir:
            self._download_tree(entry, local)
        else:
            self.download_file(entry, local / entry.name if local.is_dir() else local)

    def _download_tree(self, root: RemoteEntry, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for entry in self.remote.walk(root.path):
            rel = entry.path[len(root.path.rstrip("/")) + 1:]
            dest = target.joinpath(*rel.split("/"))
            if entry.is_dir:
                dest.mkdir(parents=True, exist_ok=True)
                continue
            try:
                self.download_file(entry, dest)
            except (ConnectionFailed, ServerError):
                raise
            except DavBackupError as exc:
                if exc.exit_code == 5:
                    raise
                self.stats.files_failed += 1
                self.stats.errors.append(exc)
                _log.error("%s: %s", entry.path, exc.message)

    def download_file(self, entry: RemoteEntry, dest: Path) -> None:
        key = ClientState.key(self.remote.origin, self.remote.user, entry.path)
        record = self.state.downloaded(key) if self.state else None
        if not self.options.force and record and dest.is_file() and record.etag == entry.etag:
            st = dest.stat()
            if st.st_size == record.size == entry.size and st.st_mtime_ns == record.mtime_ns:
                self.stats.files_skipped += 1
                return
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        have = part.stat().st_size if part.exists() else 0
        if have and (not self.state or self.state.partial_etag(key) != entry.etag or have > entry.size):
            have = 0  # a part file of another version (or of unknown origin): start over
        if have:
            self.stats.resumed += 1
        if self.state and entry.etag:
            self.state.set_partial(key, entry.etag)
        etag = self._fetch(entry, part, have)
        os.replace(part, dest)
        if entry.modified is not None:
            os.utime(dest, (entry.modified, entry.modified))
        if self.state:
            self.state.set_partial(key, None)
            st = dest.stat()
            self.state.record_download(key, DownloadRecord(st.st_size, st.st_mtime_ns, etag or entry.etag or ""))
        self.stats.files_received += 1

    def _fetch(self, entry: RemoteEntry, part: Path, have: int) -> str | None:
        opts = self.options
        backoff = Backoff(opts.retries, opts.backoff_base, opts.backoff_max)
        bar = self.progress.bar(entry.name, entry.size, have)
        try:
            while True:
                headers = {}
                if have:
                    headers["Range"] = f"bytes={have}-"
                    if entry.etag:
                        headers["If-Range"] = f'"{entry.etag}"'
                try:
                    with self.remote.request("GET", entry.path, headers=headers, stream=True) as response:
                        status = response.status_code
                        if status == 416 and have == entry.size:
                            return entry.etag
                        if status in (423, 429) or status >= 500:
                            if backoff.failed(retry_after_seconds(response.headers.get("Retry-After"))):
                                continue
                            raise error_for(response, f"GET {entry.path}")
                        if status == 416:
                            have = 0
                            part.unlink(missing_ok=True)
                            continue
                        if status not in (200, 206):
                            raise error_for(response, f"GET {entry.path}")
                        if status == 200 and have:
                            bar.update(-have)
                            have = 0
                        have = self._write(response, part, have, bar, backoff)
                        total = _total_length(response, have)
                except RETRYABLE as exc:
                    have = part.stat().st_size if part.exists() else 0
                    if not backoff.failed():
                        raise ConnectionFailed(f"GET {self.remote.origin}{entry.path}: giving up ({exc})") from exc
                    continue
                if total is not None and have < total:
                    if not backoff.failed():
                        raise ConnectionFailed(f"GET {entry.path}: the body kept ending early")
                    continue
                return (response.headers.get("ETag") or "").strip('"') or entry.etag
        finally:
            bar.close()

    def _write(self, response: requests.Response, part: Path, have: int, bar: object, backoff: Backoff) -> int:
        mode = "r+b" if have and part.exists() else "wb"
        with open(part, mode) as handle:
            handle.seek(have)
            handle.truncate()
            for data in response.iter_content(BLOCK):
                handle.write(data)
                have += len(data)
                self.stats.bytes_received += len(data)
                bar.update(len(data))  # type: ignore[attr-defined]
                backoff.progress()
            handle.flush()
            os.fsync(handle.fileno())
        return have


def _total_length(response: requests.Response, have: int) -> int | None:
    """The full size the answer promises (from Content-Range or Content-Length)."""
    crange = response.headers.get("Content-Range", "")
    if "/" in crange:
        tail = crange.rsplit("/", 1)[1].strip()
        return int(tail) if tail.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() and response.status_code == 200 else None

