"""Uploading files and trees with range PUTs that resume (protocol: provider/resumable/range_put.py).

A file of T bytes goes up as parts ``PUT`` with ``Content-Range: bytes S-E/T`` (64 MiB
by default), each carrying ``Repr-Digest: sha-256=:…:`` of the whole file so the
server can tell a resumed upload of the same content from a new one and check the
assembled file. The server answers each part with ``308`` and ``Upload-Offset`` (bytes
held), the last one with 201/204 and the ETag.

When a part fails — the connection drops, a timeout, a 5xx, a 423 because the
server still runs the broken request — the client waits (exponential backoff), asks
the server how much it holds (``Content-Range: bytes */T``, empty body, answered with
``308``/``Upload-Offset``) and continues from there. A file larger than one part
starts with that question too, so a client killed in the middle of a file and run
again sends only what the server is missing.

Files up to 4 MiB go up in one plain ``PUT`` with the same ``Repr-Digest`` (nothing
worth resuming). A tree is walked by :mod:`davbackup.client.tree_upload`, which sends
several files at once (``--jobs``). Unchanged files are skipped using the local state
(:mod:`davbackup.client.state`) and the ETag and size the server lists for each folder:
no file is read when its size and modification time are those of its last upload.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import requests

from davbackup.client.errors import RETRYABLE, ConnectionFailed, ServerError, TransferFailed, error_for
from davbackup.client.progress import Progress
from davbackup.client.remote import Remote, RemoteEntry, join
from davbackup.client.retry import Backoff, retry_after_seconds
from davbackup.client.state import ClientState, UploadRecord
from davbackup.client.tree_upload import TreeUpload
from davbackup.errors import DavBackupError, UsageError

_log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 64 * MiB
#: problem type of the server's answer when the assembled file fails the Repr-Digest
DIGEST_PROBLEM = "tag:davbackup,2026:digest-mismatch"
BLOCK = 1 * MiB


#: files up to this size (and the part size) go up in one plain PUT: nothing to resume
SMALL_FILE = 4 * MiB
DEFAULT_JOBS = 4


@dataclass
class UploadOptions:
    part_size: int = DEFAULT_PART_SIZE
    retries: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    force: bool = False  # send even files the state says are unchanged
    jobs: int = DEFAULT_JOBS  # files of a tree transferred at the same time


@dataclass
class UploadStats:
    files_sent: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    bytes_sent: int = 0  # body bytes put on the wire (including retransmissions)
    resumed: int = 0  # files continued from an offset the server already held
    errors: list[DavBackupError] = field(default_factory=list)


class Uploader:
    def __init__(self, remote: Remote, state: ClientState | None, options: UploadOptions | None = None,
                 progress: Progress | None = None) -> None:
        if options is not None and options.part_size < 1:
            raise UsageError("the part size must be positive")
        self.remote = remote
        self.state = state
        self.options = options or UploadOptions()
        if self.options.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        self.progress = progress or Progress(False)
        self.stats = UploadStats()
        self._stats_lock = threading.Lock()

    def count(self, **amounts: int) -> None:
        """Add to the statistics (transfers of a tree run in several threads)."""
        with self._stats_lock:
            for name, amount in amounts.items():
                setattr(self.stats, name, getattr(self.stats, name) + amount)

    def failed(self, error: DavBackupError) -> None:
        with self._stats_lock:
            self.stats.files_failed += 1
            self.stats.errors.append(error)

    # --- trees -----------------------------------------------------------------------

    def upload(self, local: Path, remote_dir: str) -> None:
        """Upload ``local`` (a file or a folder tree) into the remote folder ``remote_dir``."""
        if not local.exists():
            raise UsageError(f"{local}: no such file or folder")
        self.remote.makedirs(remote_dir)
        if local.is_dir():
            self._upload_tree(local, join(remote_dir, local.resolve().name))
        else:
            listing = {e.name: e for e in self.remote.list(remote_dir) or []}
            self._guarded(local, join(remote_dir, local.name), listing.get(local.name))

    def _upload_tree(self, root: Path, remote_root: str) -> None:
        TreeUpload(self).run(root, remote_root)

    def _guarded(self, local: Path, remote_path: str, remote: RemoteEntry | None) -> None:
        """One file; errors that concern only this file are collected, the rest abort."""
        try:
            self.upload_file(local, remote_path, remote)
        except (ConnectionFailed, ServerError) as exc:
            raise exc
        except DavBackupError as exc:
            if exc.exit_code == 5:  # authentication or permission: nothing else will work
                raise
            self.failed(exc)
            _log.error("%s: %s", local, exc.message)
        except OSError as exc:
            self.failed(DavBackupError(f"{local}: cannot read ({exc.strerror})"))
            _log.error("%s: cannot read (%s)", local, exc.strerror)

    # --- one file --------------------------------------------------------------------

    def unchanged(self, local: Path, remote_path: str, remote: RemoteEntry | None,
                  st: os.stat_result | None = None) -> bool:
        """The cheap check alone: the server lists the ETag and size of this file's last
        upload and the local file has that upload's size and modification time (``st``:
        its ``stat`` if the caller has just taken it)."""
        if self.options.force or self.state is None or remote is None or remote.is_dir:
            return False
        record = self.state.uploaded(ClientState.key(self.remote.origin, self.remote.user, remote_path))
        if record is None or remote.etag != record.etag or remote.size != record.size:
            return False
        if st is None:
            try:
                st = local.stat()
            except OSError:
                return False  # the upload reports it
        if st.st_size == record.size and st.st_mtime_ns == record.mtime_ns:
            self.count(files_skipped=1)
            return True
        return False

    def upload_file(self, local: Path, remote_path: str, remote: RemoteEntry | None = None) -> str:
        """Upload one file to ``remote_path``; returns the server's ETag."""
        st = local.stat()
        key = ClientState.key(self.remote.origin, self.remote.user, remote_path)
        record = self.state.uploaded(key) if self.state else None
        if not self.options.force and record and remote and not remote.is_dir \
                and remote.etag == record.etag and remote.size == st.st_size == record.size:
            if record.mtime_ns == st.st_mtime_ns:
                self.count(files_skipped=1)
                return record.etag
            if _sha256_file(local).hex() == record.sha256 and self.state is not None:
                self.state.record_upload(key, UploadRecord(st.st_size, st.st_mtime_ns, record.sha256, record.etag))
                self.count(files_skipped=1)
                return record.etag
        if 0 < st.st_size <= min(SMALL_FILE, self.options.part_size):
            etag, digest = self._put_whole(local, remote_path, st)
        else:
            digest = _sha256_file(local)
            with open(local, "rb") as handle:
                if os.fstat(handle.fileno()).st_mtime_ns != st.st_mtime_ns:
                    raise TransferFailed(f"{local}: changed while being read; try again")
                etag = _FileUpload(self, handle, local, remote_path, st.st_size, digest, int(st.st_mtime)).run()
        if self.state:
            self.state.record_upload(key, UploadRecord(st.st_size, st.st_mtime_ns, digest.hex(), etag))
        self.count(files_sent=1)
        return etag

    def _put_whole(self, local: Path, remote_path: str, st: os.stat_result) -> tuple[str, bytes]:
        """A small file in one PUT (read once: hashed and sent from memory), retried whole
        after a failure; the server checks ``Repr-Digest`` before the file becomes current."""
        with open(local, "rb") as handle:
            data = handle.read()
            if os.fstat(handle.fileno()).st_mtime_ns != st.st_mtime_ns or len(data) != st.st_size:
                raise TransferFailed(f"{local}: changed while being read; try again")
        digest = hashlib.sha256(data).digest()
        headers = {"Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode('ascii')}:",
                   "X-OC-Mtime": str(int(st.st_mtime))}
        opts = self.options
        backoff = Backoff(opts.retries, opts.backoff_base, opts.backoff_max)
        while True:
            self.count(bytes_sent=len(data))
            try:
                response = self.remote.request("PUT", remote_path, data=data, headers=headers)
            except RETRYABLE as exc:
                if backoff.failed():
                    continue
                raise ConnectionFailed(f"PUT {self.remote.origin}{remote_path}: giving up after "
                                       f"{backoff.retries} retries ({exc})") from exc
            status = response.status_code
            if status in (200, 201, 204):
                return (response.headers.get("ETag") or "").strip('"'), digest
            if (status in (423, 429) or status >= 500) and backoff.failed(
                    retry_after_seconds(response.headers.get("Retry-After"))):
                continue
            raise error_for(response, f"PUT {remote_path}")


class _FileUpload:
    """The part loop of one file."""

    def __init__(self, uploader: Uploader, handle: BinaryIO, local: Path, remote_path: str, size: int,
                 digest: bytes, mtime: int) -> None:
        self.up = uploader
        self.remote = uploader.remote
        self.handle = handle
        self.local = local
        self.path = remote_path
        self.size = size
        self.headers = {
            "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode('ascii')}:",
            "X-OC-Mtime": str(mtime),
        }
        opts = uploader.options
        self.backoff = Backoff(opts.retries, opts.backoff_base, opts.backoff_max)
        self.restarted = False

    def run(self) -> str:
        if self.size == 0:
            return self._empty()
        part = self.up.options.part_size
        first = self._query() if self.size > part else 0
        if isinstance(first, str):
            return first
        if first:
            self.up.count(resumed=1)
        offset = first
        bar = self.up.progress.bar(self.local.name, self.size, offset)
        try:
            while True:
                end = min(offset + part, self.size) - 1
                outcome = self._send(offset, end)
                if isinstance(outcome, str):
                    return outcome
                if outcome > offset:
                    self.backoff.progress()
                    bar.update(outcome - offset)
                offset = outcome
        finally:
            bar.close()

    # -- requests ---------------------------------------------------------------------

    def _send(self, start: int, end: int) -> int | str:
        """PUT one part; the next offset, or the ETag when the file is complete."""
        headers = dict(self.headers, **{"Content-Range": f"bytes {start}-{end}/{self.size}"})
        body = _Slice(self.handle, start, end - start + 1, self.up)
        try:
            response = self.remote.request("PUT", self.path, data=body, headers=headers)
        except RETRYABLE as exc:
            return self._after_failure(f"connection lost during bytes {start}-{end}: {exc}")
        return self._interpret(response, start)

    def _interpret(self, response: requests.Response, start: int) -> int | str:
        status = response.status_code
        if status in (200, 201, 204):
            return (response.headers.get("ETag") or "").strip('"')
        if status == 308:
            return _held(response)
        if status == 409 and "Upload-Offset" in response.headers:
            held = _held(response)
            if held == start:  # "another file" answer at the same offset: cannot progress
                raise error_for(response, f"PUT {self.path}")
            return held
        if status == 400 and DIGEST_PROBLEM in _text(response):
            if self.restarted:
                raise TransferFailed(f"{self.path}: the server received other bytes than {self.local} holds")
            self.restarted = True  # the server dropped the session: send everything again
            return 0
        if status in (423, 429) or status >= 500:
            return self._after_failure(f"server answered {status}",
                                       retry_after_seconds(response.headers.get("Retry-After")))
        raise error_for(response, f"PUT {self.path}")

    def _after_failure(self, reason: str, retry_after: float | None = None) -> int | str:
        _log.info("%s: %s; retrying", self.path, reason)
        while self.backoff.failed(retry_after):
            try:
                return self._query(retrying=False)
            except ConnectionFailed as exc:
                reason = str(exc)
                retry_after = None
        raise ConnectionFailed(f"PUT {self.remote.origin}{self.path}: giving up after "
                               f"{self.backoff.retries} retries ({reason})")

    def _query(self, *, retrying: bool = True) -> int | str:
        """How many bytes the server holds of this file (0 if none), or the ETag if complete."""
        headers = dict(self.headers, **{"Content-Range": f"bytes */{self.size}"})
        while True:
            try:
                response = self.remote.request("PUT", self.path, data=b"", headers=headers)
            except RETRYABLE as exc:
                if retrying and self.backoff.failed():
                    continue
                raise ConnectionFailed(f"PUT {self.remote.origin}{self.path} (offset query): {exc}") from exc
            if response.status_code == 308:
                return _held(response)
            if response.status_code in (200, 201, 204):
                return (response.headers.get("ETag") or "").strip('"')  # completed already
            if response.status_code in (423, 429) or response.status_code >= 500:
                if self.backoff.failed(retry_after_seconds(response.headers.get("Retry-After"))):
                    continue
            raise error_for(response, f"PUT {self.path} (offset query)")

    def _empty(self) -> str:
        while True:
            try:
                response = self.remote.request("PUT", self.path, data=b"", headers={"X-OC-Mtime": self.headers["X-OC-Mtime"]})
            except RETRYABLE as exc:
                if self.backoff.failed():
                    continue
                raise ConnectionFailed(f"PUT {self.remote.origin}{self.path}: {exc}") from exc
            if response.status_code in (200, 201, 204):
                return (response.headers.get("ETag") or "").strip('"')
            if (response.status_code in (423, 429) or response.status_code >= 500) and self.backoff.failed():
                continue
            raise error_for(response, f"PUT {self.path}")


class _Slice:
    """``length`` bytes of a file from ``start``, as a request body of known length."""

    def __init__(self, handle: BinaryIO, start: int, length: int, stats_of: Uploader) -> None:
        self.handle, self.start, self.length, self.stats_of = handle, start, length, stats_of

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        self.handle.seek(self.start)
        remaining = self.length
        while remaining > 0:
            data = self.handle.read(min(BLOCK, remaining))
            if not data:
                raise TransferFailed("the local file got shorter during the upload")
            remaining -= len(data)
            self.stats_of.count(bytes_sent=len(data))
            yield data


def _held(response: requests.Response) -> int:
    value = response.headers.get("Upload-Offset")
    if value is not None and value.strip().isdigit():
        return int(value)
    rng = response.headers.get("Range", "")  # Google style: "bytes=0-N"
    if rng.startswith("bytes=0-") and rng[8:].isdigit():
        return int(rng[8:]) + 1
    if response.status_code == 308:
        return 0
    raise ServerError(f"the server's answer {response.status_code} has no Upload-Offset")


def _text(response: requests.Response) -> str:
    try:
        return response.text
    except Exception:  # noqa: BLE001
        return ""


def _sha256_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            data = handle.read(4 * BLOCK)
            if not data:
                return digest.digest()
            digest.update(data)


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def parse_size(text: str) -> int:
    """``64M``, ``64MiB``, ``1G``, ``4096`` → bytes (binary units)."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = 1
    if t and t[-1] in "kmgt":
        factor = 1024 ** ("kmgt".index(t[-1]) + 1)
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise UsageError(f"not a size: {text!r} (examples: 64M, 1G, 65536)") from None
    if value <= 0:
        raise UsageError(f"the size must be positive: {text!r}")
    return int(value * factor)

