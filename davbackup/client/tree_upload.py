"""Uploading a folder tree with several transfers at once.

The tree is walked in the calling thread, folder by folder and in name order, with
one request per folder: a folder its parent's listing shows is listed (one PROPFIND,
which gives every file's ETag and size for the skip check), a missing one is
created (one MKCOL; it is empty). Each file then goes to a pool of ``jobs`` threads, each with its own HTTP
session, at most ``4 × jobs`` files ahead of the transfers. A file's own failure is
counted and the rest go on; a failure that concerns every file (no connection, login
refused) stops the walk, lets the transfers under way finish and is raised.
"""

from __future__ import annotations

import logging
import os
import posixpath
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from davbackup.client.remote import RemoteEntry, join

if TYPE_CHECKING:
    from davbackup.client.upload import Uploader

_log = logging.getLogger(__name__)


class TreeUpload:
    def __init__(self, uploader: Uploader) -> None:
        self.up = uploader
        self.jobs = uploader.options.jobs
        self._fatal: list[BaseException] = []

    def run(self, root: Path, remote_root: str) -> None:
        """Upload the tree ``root`` as the remote folder ``remote_root``."""
        if self.jobs == 1:
            for path, remote_path, entry in self._files(root, remote_root):
                self.up._guarded(path, remote_path, entry)
            return
        slots = threading.BoundedSemaphore(4 * self.jobs)
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="davbackup-upload") as pool:
            for path, remote_path, entry in self._files(root, remote_root):
                slots.acquire()
                if self._fatal:
                    slots.release()
                    break
                future = pool.submit(self._one, path, remote_path, entry)
                future.add_done_callback(lambda _f: slots.release())
        if self._fatal:
            raise self._fatal[0]

    def _files(self, root: Path, remote_root: str) -> Iterator[tuple[Path, str, RemoteEntry | None]]:
        listings: dict[str, dict[str, RemoteEntry]] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            if self._fatal:
                return
            dirnames.sort()
            here = Path(dirpath)
            rel = here.relative_to(root).as_posix()
            remote_dir = remote_root if rel == "." else join(remote_root, rel)
            listing = self._listing(remote_dir, listings)
            listings[remote_dir] = listing
            for name in sorted(filenames):
                path = here / name
                if not path.is_file():
                    _log.warning("%s: not a regular file, skipped", path)
                    continue
                yield path, join(remote_dir, name), listing.get(name)

    def _listing(self, remote_dir: str, listings: dict[str, dict[str, RemoteEntry]]) -> dict[str, RemoteEntry]:
        """The members of ``remote_dir``, which is created if missing. One request per
        folder: the parent's listing tells whether it exists (then one PROPFIND) or not
        (then one MKCOL, and it is empty)."""
        remote = self.up.remote
        parent, name = posixpath.split(remote_dir)
        seen = listings.get(parent, {}).get(name) if parent in listings else None
        if seen is not None and seen.is_dir:
            remote.known_dir(remote_dir)
            created = False
        else:
            created = remote.makedirs(remote_dir)  # a file in the way: Conflict
        if created:
            return {}
        return {e.name: e for e in remote.list(remote_dir) or []}

    def _one(self, path: Path, remote_path: str, entry: RemoteEntry | None) -> None:
        try:
            self.up._guarded(path, remote_path, entry)
        except BaseException as exc:  # noqa: BLE001 - handed to the walking thread
            self._fatal.append(exc)
