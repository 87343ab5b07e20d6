"""Uploading a folder tree with several transfers at once.

The tree is walked in the calling thread, folder by folder and in name order: each
remote folder is created (MKCOL) and, unless it was just created and so is empty,
listed once (one PROPFIND, which gives every file's ETag and size for the skip
check). Each file then goes to a pool of ``jobs`` threads, each with its own HTTP
session, at most ``4 × jobs`` files ahead of the transfers. A file's own failure is
counted and the rest go on; a failure that concerns every file (no connection, login
refused) stops the walk, lets the transfers under way finish and is raised.
"""

from __future__ import annotations

import logging
import os
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
        remote = self.up.remote
        for dirpath, dirnames, filenames in os.walk(root):
            if self._fatal:
                return
            dirnames.sort()
            here = Path(dirpath)
            rel = here.relative_to(root).as_posix()
            remote_dir = remote_root if rel == "." else join(remote_root, rel)
            created = remote.makedirs(remote_dir)
            listing: dict[str, RemoteEntry] = {} if created else {
                e.name: e for e in remote.list(remote_dir) or []}
            for name in sorted(filenames):
                path = here / name
                if not path.is_file():
                    _log.warning("%s: not a regular file, skipped", path)
                    continue
                yield path, join(remote_dir, name), listing.get(name)

    def _one(self, path: Path, remote_path: str, entry: RemoteEntry | None) -> None:
        try:
            self.up._guarded(path, remote_path, entry)
        except BaseException as exc:  # noqa: BLE001 - handed to the walking thread
            self._fatal.append(exc)
