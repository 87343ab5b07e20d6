"""Uploading a folder tree with several transfers at once.

First every folder of the tree gets one request, a level of the tree at a time and
``jobs`` folders at once: a folder its parent's listing shows is listed (one
PROPFIND, which gives every file's ETag and size for the skip check), a missing one
is created (one MKCOL; it is empty). Then the files are taken in folder and name
order: one whose size and modification time are those of its last upload, whose
ETag the server still lists, is skipped on the spot; the others go to a pool of
``jobs`` threads, each with its own HTTP session, at most ``4 × jobs`` files ahead
of the transfers. A file's own failure is
counted and the rest go on; a failure that concerns every file (no connection, login
refused) stops the walk, lets the transfers under way finish and is raised.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
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
            for path, remote_path, entry, _st in self._files(root, remote_root):
                self.up._guarded(path, remote_path, entry)
            return
        slots = threading.BoundedSemaphore(4 * self.jobs)
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="davbackup-upload") as pool:
            for path, remote_path, entry, st in self._files(root, remote_root):
                if self.up.unchanged(path, remote_path, entry, st):
                    continue  # decided here: no thread hand-over for a skipped file
                slots.acquire()
                if self._fatal:
                    slots.release()
                    break
                future = pool.submit(self._one, path, remote_path, entry)
                future.add_done_callback(lambda _f: slots.release())
        if self._fatal:
            raise self._fatal[0]

    def _files(self, root: Path, remote_root: str) -> Iterator[tuple[Path, str, RemoteEntry | None, os.stat_result]]:
        """Each regular file (followed if a link) with its remote path, what the server
        lists there and its ``stat`` (one per file: the skip check uses it too)."""
        folders: list[tuple[Path, str, list[str]]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            rel = here.relative_to(root).as_posix()
            folders.append((here, remote_root if rel == "." else join(remote_root, rel), sorted(filenames)))
        listings = self._list_all([remote for _here, remote, _names in folders])
        for here, remote_dir, filenames in folders:
            if self._fatal:
                return
            listing = listings[remote_dir]
            for name in filenames:
                path = here / name
                try:
                    st = os.stat(path)
                except OSError:
                    st = None
                if st is None or not stat.S_ISREG(st.st_mode):
                    _log.warning("%s: not a regular file, skipped", path)
                    continue
                yield path, join(remote_dir, name), listing.get(name), st

    def _list_all(self, folders: list[str]) -> dict[str, dict[str, RemoteEntry]]:
        """Every folder's listing (creating the missing ones), a level of the tree at a
        time, ``jobs`` folders of a level at once."""
        listings: dict[str, dict[str, RemoteEntry]] = {}
        levels: dict[int, list[str]] = {}
        for folder in folders:
            levels.setdefault(folder.count("/"), []).append(folder)
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="davbackup-list") as pool:
            for depth in sorted(levels):
                level = levels[depth]
                for folder, listing in zip(level, pool.map(lambda f: self._listing(f, listings), level), strict=True):
                    listings[folder] = listing
        return listings

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
