"""Fault injection for tests: make pack appends, syncs, reads and catalog commits fail.

**Test-only.** Nothing here is active unless the environment variable
``DAVBACKUP_TEST_FAULTS`` names a file when a repository is opened; the process then
logs a warning. Tests use it to drive a real ``davbackup serve`` (or ``davbackup gc``)
through disk-full and I/O-error conditions and check that nothing is acknowledged
that is not durable.

The file holds a JSON list of rules and is read again whenever it changes (replace
it with a new file: its inode, time and size are compared), so a test arms and
clears faults in a running server by rewriting it::

    [{"op": "append", "error": "ENOSPC"},
     {"op": "commit", "error": "EIO", "times": 2},
     {"op": "sync", "delay": 0.5}]

``op`` is ``append``, ``sync``, ``read`` (pack storage, including ``open_stream``),
``commit`` (the catalog's group commit) or ``*``. ``error`` is ``ENOSPC`` or ``EIO``
(omitted: no error); ``delay`` is seconds to sleep before the operation; ``times``
limits how often the rule fires (default: until the file changes); ``kind``
(``journal`` or ``data``) limits a pack rule to the metadata journal's packs or to the
others (default: both). A failing ``sync``
is a failed fsync, with the Linux meaning: the bytes it should have made durable may
be gone. To make that real, the wrapper overwrites the pack's unsynced bytes with
zeros on disk before raising, so any chunk acknowledged from them would fail
``check --read-data``. A failing ``commit`` raises the ``sqlite3.OperationalError``
SQLite gives for a full disk (``SQLITE_FULL``) or an I/O error (``SQLITE_IOERR``), and
the transaction is rolled back.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from davbackup.storage import PackAppender, PackStorage

log = logging.getLogger(__name__)

ENV = "DAVBACKUP_TEST_FAULTS"
OPS = ("append", "sync", "read", "commit")
KINDS = ("data", "journal")
ERRORS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}
_SQLITE_CODES = {"ENOSPC": (13, "SQLITE_FULL", "database or disk is full"),
                 "EIO": (10, "SQLITE_IOERR", "disk I/O error")}


class FaultPlan:
    """The rules of one control file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._rules: list[dict[str, Any]] = []
        self.fired: dict[str, int] = {}

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            rules = json.loads(self.path.read_text(encoding="utf-8") or "[]") if stamp[0] else []
        except (OSError, ValueError) as exc:
            log.error("fault file %s unreadable (%s): no faults", self.path, exc)
            rules = []
        self._rules = [dict(rule) for rule in rules if isinstance(rule, dict)]
        for rule in self._rules:
            if (rule.get("op") not in (*OPS, "*") or rule.get("error", "ENOSPC") not in ERRORS
                    or rule.get("kind", "data") not in KINDS):
                log.error("fault rule %r ignored", rule)
                rule["times"] = 0

    def check(self, op: str, kind: str | None = None) -> str | None:
        """Sleep for matching delays; the error name to raise for ``op`` (on a pack of
        ``kind``), if any."""
        delay, error = 0.0, None
        with self._lock:
            self._refresh()
            for rule in self._rules:
                if rule.get("op") not in (op, "*"):
                    continue
                if kind is not None and rule.get("kind", kind) != kind:
                    continue
                times = rule.get("times")
                if times is not None and times <= 0:
                    continue
                if times is not None:
                    rule["times"] = times - 1
                delay += float(rule.get("delay", 0))
                if rule.get("error") and error is None:
                    error = rule["error"]
            if error is not None:
                self.fired[op] = self.fired.get(op, 0) + 1
        if delay:
            time.sleep(delay)
        return error

    def raise_os_error(self, op: str, what: str, kind: str | None = None) -> None:
        error = self.check(op, kind)
        if error is not None:
            code = ERRORS[error]
            raise OSError(code, f"{os.strerror(code)} (injected fault: {op} {what})")

    def commit_hook(self) -> None:
        """For :attr:`Catalog.fault_hook`: called right before COMMIT."""
        error = self.check("commit")
        if error is not None:
            code, name, message = _SQLITE_CODES[error]
            exc = sqlite3.OperationalError(f"{message} (injected fault)")
            exc.sqlite_errorcode = code
            exc.sqlite_errorname = name
            raise exc


class FaultyAppender:
    """A pack appender whose appends and syncs obey a :class:`FaultPlan`."""

    def __init__(self, inner: PackAppender, plan: FaultPlan, path: Path | None, kind: str = "data") -> None:
        self.inner = inner
        self.plan = plan
        self.kind = kind
        self.name = inner.name
        self._path = path
        self._synced = 0

    @property
    def size(self) -> int:
        return self.inner.size

    def append(self, data: bytes | bytearray) -> int:
        self.plan.raise_os_error("append", self.name, self.kind)
        return self.inner.append(data)

    def sync(self, upto: int | None = None) -> None:
        self._sync(lambda: self.inner.sync(upto))

    def finish(self) -> None:
        self._sync(self.inner.finish)

    def _sync(self, action: Callable[[], None]) -> None:
        target = self.inner.size
        error = self.plan.check("sync", self.kind)
        if error is not None:
            self._lose_unsynced()
            code = ERRORS[error]
            raise OSError(code, f"{os.strerror(code)} (injected fault: fsync of pack {self.name})")
        action()
        self._synced = max(self._synced, target)

    def _lose_unsynced(self) -> None:
        """What a failed fsync may do: the bytes since the last good sync are gone."""
        if self._path is None:
            return
        start, end = self._synced, self.inner.size
        if end <= start:
            return
        fd = os.open(self._path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(end - start), start)
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._sync(self.inner.finish)  # close() implies finish(): it syncs
        self.inner.close()


class FaultyPackStorage:
    """Pack storage whose appends, syncs and reads obey a :class:`FaultPlan`."""

    def __init__(self, inner: PackStorage, plan: FaultPlan, kind: str = "data") -> None:
        self.inner = inner
        self.plan = plan
        self.kind = kind

    def for_journal(self) -> "FaultyPackStorage":
        """The same storage as the metadata journal sees it (rules with ``kind``)."""
        return FaultyPackStorage(self.inner, self.plan, "journal")

    def _path(self, name: str) -> Path | None:
        path = getattr(self.inner, "path", None)
        return path(name) if callable(path) else None

    def create(self, name: str) -> FaultyAppender:
        return FaultyAppender(self.inner.create(name), self.plan, self._path(name), self.kind)

    def read(self, name: str, offset: int, length: int) -> bytes:
        self.plan.raise_os_error("read", name, self.kind)
        return self.inner.read(name, offset, length)

    def open_stream(self, name: str) -> BinaryIO:
        self.plan.raise_os_error("read", name, self.kind)
        return self.inner.open_stream(name)

    def size(self, name: str) -> int:
        return self.inner.size(name)

    def mtime(self, name: str) -> float:
        return self.inner.mtime(name)

    def names(self) -> Iterator[str]:
        return self.inner.names()

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def drop_deleted(self) -> int:
        drop = getattr(self.inner, "drop_deleted", None)
        return drop() if drop is not None else 0

    def forget(self, name: str) -> None:
        forget = getattr(self.inner, "forget", None)
        if forget is not None:
            forget(name)

    def close(self) -> None:
        self.inner.close()


def plan_from_environment() -> FaultPlan | None:
    """The plan named by ``DAVBACKUP_TEST_FAULTS``, or None (the normal case)."""
    value = os.environ.get(ENV)
    if not value:
        return None
    log.warning("%s=%s: FAULT INJECTION IS ON (test-only; never set this in production)", ENV, value)
    return FaultPlan(Path(value))
