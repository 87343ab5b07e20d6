"""WsgiDAV lock storage kept in the repository's catalog, so locks survive a restart.

WsgiDAV's ``LockManager`` asks its storage for the locks on a URL and every parent
of it for each write, and for every resource a PROPFIND lists. Asking SQLite each
time would turn a listing into one query per entry, so this storage keeps an
in-memory copy of the (few) live locks and writes every change through to
``repo.locks`` before it returns. That is correct because one server process owns
the repository (the lock manager's own locking works only inside one process too).

Keys are WsgiDAV ref URLs, which carry the user (see :mod:`provider.paths`), so the
locks of two users never meet. The lock dict is stored as JSON: the owner XML,
which WsgiDAV keeps as ``bytes``, is stored as UTF-8 text.

:func:`check_write_locks` replaces ``LockManager.check_write_permission`` for
depth-infinity operations: WsgiDAV refuses a DELETE or MOVE of a collection with a
locked member even when the client submitted that member's lock token, which RFC
4918 (§9.6.1, §9.9.2) says makes the operation allowed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_LOCKED,
    DAVError,
    DAVErrorCondition,
    PRECONDITION_CODE_LockConflict,
)
from wsgidav.lock_man.lock_manager import (
    generate_lock_token,
    normalize_lock_root,
    validate_lock,
)

if TYPE_CHECKING:
    from davbackup.repository import Repository

_log = logging.getLogger(__name__)

LockDict = dict[str, Any]


class RepositoryLockStorage:
    """The ``lock_storage`` interface of WsgiDAV over ``repo.locks``."""

    LOCK_TIME_OUT_DEFAULT = 604800  # one week, as WsgiDAV's own storages
    LOCK_TIME_OUT_MAX = 4 * 604800

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._mutex = threading.RLock()
        self._locks: dict[str, LockDict] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # --- lifecycle ---------------------------------------------------------

    def open(self) -> None:
        """Load the live locks from the catalog, dropping expired ones."""
        with self._mutex:
            self._repo.locks.delete_expired(time.time())
            self._locks = {}
            for data in self._repo.locks.list(None):
                try:
                    lock = _from_stored(data)
                except (KeyError, TypeError, ValueError) as exc:
                    _log.warning("ignoring malformed stored lock %r: %s", data, exc)
                    continue
                self._locks[lock["token"]] = lock
            _log.debug("loaded %d lock(s) from the catalog", len(self._locks))

    def close(self) -> None:
        with self._mutex:
            self._locks = None

    def cleanup(self) -> None:
        """Purge expired locks from memory and the catalog."""
        now = time.time()
        with self._mutex:
            for token in [t for t, lock in self._table().items() if _expired(lock, now)]:
                self._forget(token)
            self._repo.locks.delete_expired(now)

    def clear(self) -> None:
        with self._mutex:
            for token in list(self._table()):
                self._forget(token)

    # --- single locks -------------------------------------------------------

    def get(self, token: str) -> LockDict | None:
        """The lock for ``token``, or None if unknown or expired (then purged)."""
        with self._mutex:
            lock = self._table().get(token)
            if lock is None:
                return None
            if _expired(lock, time.time()):
                self._forget(token)
                return None
            return lock

    def create(self, path: str, lock: LockDict) -> LockDict:
        """Store a new lock on ``path``; fills in root, timeout, expire and token."""
        # WsgiDAV's LockManager keeps using the dict it passed in, so it is
        # completed in place (as LockStorageDict does).
        assert lock.get("token") is None and lock.get("expire") is None
        root = normalize_lock_root(path)
        timeout = _clamp_timeout(
            lock.get("timeout"), self.LOCK_TIME_OUT_DEFAULT, self.LOCK_TIME_OUT_MAX
        )
        lock.update(root=root, timeout=timeout, expire=time.time() + timeout)
        validate_lock(lock)
        token = generate_lock_token()
        with self._mutex:
            self._repo.locks.put(token, root, lock["expire"], _to_stored(dict(lock, token=token)))
            lock["token"] = token
            self._table()[token] = lock
        return lock

    def refresh(self, token: str, *, timeout: float | None) -> LockDict:
        """Give the lock a new lifetime; raises ValueError for an unknown token."""
        with self._mutex:
            lock = self._table().get(token)
            if lock is None:
                raise ValueError(f"no lock with token {token!r}")
            seconds = _clamp_timeout(
                timeout, self.LOCK_TIME_OUT_DEFAULT, self.LOCK_TIME_OUT_MAX
            )
            updated = dict(lock, timeout=seconds, expire=time.time() + seconds)
            self._repo.locks.put(token, updated["root"], updated["expire"], _to_stored(updated))
            self._table()[token] = updated
            return updated

    def delete(self, token: str) -> bool:
        with self._mutex:
            if token not in self._table():
                return False
            self._forget(token)
            return True

    # --- queries --------------------------------------------------------------

    def get_lock_list(
        self,
        path: str,
        *,
        include_root: bool,
        include_children: bool,
        token_only: bool,
    ) -> list[Any]:
        """Live direct locks on ``path`` and/or on resources below it."""
        assert path and path.startswith("/")
        assert include_root or include_children
        root = normalize_lock_root(path)
        now = time.time()
        found: list[LockDict] = []
        with self._mutex:
            for token, lock in list(self._table().items()):
                if _expired(lock, now):
                    self._forget(token)
                    continue
                lock_root = lock["root"]
                if (include_root and lock_root == root) or (
                    include_children and util.is_child_uri(root, lock_root)
                ):
                    found.append(lock)
        if token_only:
            return [lock["token"] for lock in found]
        return found

    # --- internals ------------------------------------------------------------

    def _table(self) -> dict[str, LockDict]:
        if self._locks is None:
            raise RuntimeError("lock storage used before open() or after close()")
        return self._locks

    def _forget(self, token: str) -> None:
        self._table().pop(token, None)
        self._repo.locks.delete(token)


def check_write_locks(
    lock_manager: Any, *, url: str, depth: str, token_list: list[str], principal: str
) -> None:
    """Raise 423 unless ``principal`` may change ``url`` (and, for depth infinity,
    everything below it) with the lock tokens it submitted."""
    lock_manager.check_write_permission(
        url=url, depth="0", token_list=token_list, principal=principal
    )
    if depth != "infinity":
        return
    conflict = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
    members = lock_manager.storage.get_lock_list(
        url, include_root=False, include_children=True, token_only=False
    )
    for lock in members:
        if lock["principal"] != principal or lock["token"] not in token_list:
            conflict.add_href(lock["root"])
    if conflict.hrefs:
        raise DAVError(HTTP_LOCKED, err_condition=conflict)


def _expired(lock: LockDict, now: float) -> bool:
    expire = float(lock["expire"])
    return 0 <= expire < now


def _clamp_timeout(timeout: float | None, default: float, maximum: float) -> float:
    if timeout is None:
        return float(default)
    timeout = float(timeout)
    if timeout < 0 or timeout > maximum:
        return float(maximum)
    return timeout


def _to_stored(lock: LockDict) -> dict[str, Any]:
    owner = lock.get("owner") or b""
    stored = dict(lock)
    stored["owner"] = owner.decode("utf-8") if isinstance(owner, bytes) else str(owner)
    return stored


def _from_stored(data: dict[str, Any]) -> LockDict:
    lock = dict(data)
    lock["owner"] = str(data.get("owner") or "").encode("utf-8")
    lock["timeout"] = float(data["timeout"])
    lock["expire"] = float(data["expire"])
    for key in ("root", "token", "type", "scope", "depth", "principal"):
        if not isinstance(lock.get(key), str):
            raise ValueError(f"lock field {key!r} missing")
    return lock
