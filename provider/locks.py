"""WsgiDAV lock storage kept in the repository's catalog, so locks survive a restart.

WsgiDAV's ``LockManager`` asks its storage for the locks on a URL and every parent
of it for each write, and for every resource a PROPFIND lists. Asking SQLite each
time would turn a listing into one query per entry, so this storage keeps an
in-memory copy of the (few) live locks and writes every change through to
``repo.locks`` before it returns. That is correct because one server process owns
the repository (the lock manager's own locking works only inside one process too).
With a catalog shared by several nodes (PostgreSQL), every request first checks
the catalog's lock epoch (:meth:`RepositoryLockStorage.sync`, one query) and reloads
the copy when another node changed a lock, so a lock taken through one node is
enforced by every other node from its next request on; a new lock is stored by a
write that checks the catalog's records for conflicts first (serialised across the
cluster), so two LOCK requests racing on two nodes cannot both be granted.

The copy is indexed by lock root (a sorted list of roots plus a dict), so the
questions WsgiDAV asks for every request and every listed resource ("locks on this
URL", "locks below this URL") cost a dictionary lookup or a bisection, never a scan
of all locks. Expired locks are dropped when they are found and by a sweep at most
once a minute.

Limits (:class:`LockLimits`, from the configuration): locks per resource (shared
locks are the only way to stack them), locks per user, and the size of the owner
XML a client may attach (it is stored and reloaded at every start). A lock is only
granted on a resource of the requesting user; one whose user was removed (or removed
and created again: a new user of the same name) is dropped when it is next seen,
and ``repo.users.remove`` deletes the stored records with the user.

Keys are WsgiDAV ref URLs, which carry the user (see :mod:`provider.paths`), so the
locks of two users never meet. The lock dict is stored as JSON: the owner XML,
which WsgiDAV keeps as ``bytes``, is stored as UTF-8 text.

:func:`check_write_locks` replaces ``LockManager.check_write_permission`` for
depth-infinity operations: WsgiDAV refuses a DELETE or MOVE of a collection with a
locked member even when the client submitted that member's lock token, which RFC
4918 (§9.6.1, §9.9.2) says makes the operation allowed.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
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

from davbackup.errors import Locked
from provider.paths import split_ref_url

if TYPE_CHECKING:
    from davbackup.service import DavService

_log = logging.getLogger(__name__)

LockDict = dict[str, Any]


@dataclass(frozen=True)
class LockLimits:
    """How many locks a client may hold, and how much it may attach to one."""

    per_resource: int = 32
    per_user: int = 1000
    owner_bytes: int = 4096


class RepositoryLockStorage:
    """The ``lock_storage`` interface of WsgiDAV over ``repo.locks``."""

    LOCK_TIME_OUT_DEFAULT = 604800  # one week, as WsgiDAV's own storages
    LOCK_TIME_OUT_MAX = 4 * 604800
    SWEEP_SECONDS = 60.0

    def __init__(self, repo: DavService, limits: LockLimits | None = None) -> None:
        self._repo = repo
        self.limits = limits or LockLimits()
        self._mutex = threading.RLock()
        self._locks: dict[str, LockDict] | None = None
        self._by_root: dict[str, dict[str, LockDict]] = {}
        self._roots: list[str] = []  # sorted keys of _by_root
        self._per_user: dict[str, int] = {}
        self._swept = 0.0
        #: with a catalog shared by several nodes, the copy is checked against the
        #: catalog's lock epoch at the start of every request (:meth:`sync`)
        self._epoch: int | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # --- lifecycle ---------------------------------------------------------

    def open(self) -> None:
        """Load the live locks from the catalog, dropping expired ones."""
        with self._mutex:
            self._repo.locks.delete_expired(time.time())
            self._load()

    def sync(self) -> None:
        """With a shared catalog (several nodes): reload the copy if any node changed a
        lock since it was loaded. One query (the epoch a trigger bumps on every change
        of the lock table); called once per request, before WsgiDAV asks anything."""
        if not self._repo.catalog.shared:
            return
        epoch = self._repo.catalog.lock_epoch()
        with self._mutex:
            if epoch != self._epoch and self._locks is not None:
                self._load(epoch)

    def _load(self, epoch: int | None = None) -> None:
        """Called with the mutex held: replace the copy by what the catalog holds."""
        if self._repo.catalog.shared and epoch is None:
            epoch = self._repo.catalog.lock_epoch()
        self._epoch = epoch
        self._locks, self._by_root, self._roots, self._per_user = {}, {}, [], {}
        for data in self._repo.locks.list(None):
            try:
                lock = _from_stored(data)
            except (KeyError, TypeError, ValueError) as exc:
                _log.warning("ignoring malformed stored lock %r: %s", data, exc)
                continue
            self._add(lock)
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
            self._swept = time.monotonic()

    def clear(self) -> None:
        with self._mutex:
            for token in list(self._table()):
                self._forget(token)

    # --- single locks -------------------------------------------------------

    def get(self, token: str) -> LockDict | None:
        """The lock for ``token``, or None if unknown, expired or orphaned (then purged)."""
        with self._mutex:
            lock = self._table().get(token)
            if lock is None or not self._alive(lock, time.time()):
                return None
            return lock

    def create(self, path: str, lock: LockDict) -> LockDict:
        """Store a new lock on ``path``; fills in root, timeout, expire and token."""
        # WsgiDAV's LockManager keeps using the dict it passed in, so it is
        # completed in place (as LockStorageDict does).
        assert lock.get("token") is None and lock.get("expire") is None
        lock.pop("token", None)
        root = normalize_lock_root(path)
        principal = str(lock.get("principal") or "")
        try:
            root_user = split_ref_url(root)[0]
        except ValueError:
            root_user = ""
        with self._mutex:
            created = self._user_created(principal) if principal else None
        if not principal or root_user != principal or created is None:
            raise DAVError(HTTP_FORBIDDEN, "locks can only be taken by a user on their own files")
        owner = lock.get("owner") or b""
        if len(owner) > self.limits.owner_bytes:
            raise DAVError(
                HTTP_BAD_REQUEST, f"lock owner is larger than {self.limits.owner_bytes} bytes"
            )
        timeout = _clamp_timeout(
            lock.get("timeout"), self.LOCK_TIME_OUT_DEFAULT, self.LOCK_TIME_OUT_MAX
        )
        lock.update(root=root, timeout=timeout, expire=time.time() + timeout, user_created=created)
        validate_lock(lock)
        token = generate_lock_token()
        with self._mutex:
            self._maybe_sweep()
            now = time.time()
            on_root = [lk for lk in list(self._by_root.get(root, {}).values()) if self._alive(lk, now)]
            if len(on_root) >= self.limits.per_resource:
                raise DAVError(
                    HTTP_FORBIDDEN,
                    f"a resource may carry at most {self.limits.per_resource} locks",
                )
            if self._per_user.get(principal, 0) >= self.limits.per_user:
                raise DAVError(
                    HTTP_FORBIDDEN, f"a user may hold at most {self.limits.per_user} locks"
                )
            stored = _to_stored(dict(lock, token=token))
            if self._repo.catalog.shared:
                # another node may have granted a conflicting lock since this request
                # began: check again inside the (cluster-wide serialised) write
                try:
                    self._repo.locks.put_unless(token, root, lock["expire"], stored,
                                                lambda rows: _conflict(lock, rows, now))
                except Locked as exc:
                    raise DAVError(HTTP_LOCKED, exc.message) from exc
            else:
                self._repo.locks.put(token, root, lock["expire"], stored)
            lock["token"] = token
            self._add(lock)
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
            self._remove(token)
            self._add(updated)
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
        candidates: list[LockDict] = []
        with self._mutex:
            self._table()
            self._maybe_sweep()
            if include_root:
                candidates.extend(self._by_root.get(root, {}).values())
            if include_children:
                prefix = root.rstrip("/") + "/"
                i = bisect.bisect_left(self._roots, prefix)
                while i < len(self._roots) and self._roots[i].startswith(prefix):
                    candidates.extend(self._by_root[self._roots[i]].values())
                    i += 1
            found = [lock for lock in candidates if self._alive(lock, now)]
        if token_only:
            return [lock["token"] for lock in found]
        return found

    def holds_any(self) -> bool:
        """Whether any lock is held at all (expired ones may still count)."""
        with self._mutex:
            return bool(self._table())

    # --- internals ------------------------------------------------------------

    def _table(self) -> dict[str, LockDict]:
        if self._locks is None:
            raise RuntimeError("lock storage used before open() or after close()")
        return self._locks

    def _add(self, lock: LockDict) -> None:
        token, root = lock["token"], lock["root"]
        self._table()[token] = lock
        on_root = self._by_root.get(root)
        if on_root is None:
            on_root = self._by_root[root] = {}
            bisect.insort(self._roots, root)
        on_root[token] = lock
        principal = lock["principal"]
        self._per_user[principal] = self._per_user.get(principal, 0) + 1

    def _remove(self, token: str) -> None:
        lock = self._table().pop(token, None)
        if lock is None:
            return
        root = lock["root"]
        on_root = self._by_root.get(root, {})
        on_root.pop(token, None)
        if not on_root:
            self._by_root.pop(root, None)
            i = bisect.bisect_left(self._roots, root)
            if i < len(self._roots) and self._roots[i] == root:
                del self._roots[i]
        principal = lock["principal"]
        left = self._per_user.get(principal, 0) - 1
        if left > 0:
            self._per_user[principal] = left
        else:
            self._per_user.pop(principal, None)

    def _forget(self, token: str) -> None:
        self._remove(token)
        self._repo.locks.delete(token)

    def _alive(self, lock: LockDict, now: float) -> bool:
        """False (and the lock is purged) if it expired or its user is gone."""
        if _expired(lock, now):
            self._forget(lock["token"])
            return False
        created = self._user_created(lock["principal"])
        expected = lock.get("user_created")
        if created is None or (expected is not None and float(expected) != created):
            _log.info("dropping lock %s of removed user %r", lock["token"], lock["principal"])
            self._forget(lock["token"])
            return False
        return True

    def _user_created(self, name: str) -> float | None:
        """When user ``name`` was created (None: no such user). Asked afresh each time
        (a primary-key lookup, only for locks actually found): users change from
        another process (``davbackup user``)."""
        user = self._repo.users.get(name)
        return None if user is None else float(user.created)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < self.SWEEP_SECONDS:
            return
        self._swept = now
        wall = time.time()
        for token in [t for t, lock in self._table().items() if _expired(lock, wall)]:
            self._forget(token)


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


def _conflict(new: LockDict, stored: list[dict[str, Any]], now: float) -> str | None:
    """Why ``new`` may not be granted beside the ``stored`` records (on its root, above
    or below it), by RFC 4918's rules: an exclusive lock conflicts with any other lock
    that covers the same resource, a shared one only with an exclusive one."""
    root = new["root"].rstrip("/")
    for other in stored:
        if _expired(other, now):
            continue
        other_root = str(other["root"]).rstrip("/")
        covers = (
            other_root == root
            or (root.startswith(other_root + "/") and other.get("depth") == "infinity")
            or (other_root.startswith(root + "/") and new.get("depth") == "infinity")
        )
        if covers and "exclusive" in (other.get("scope"), new.get("scope")):
            return f"{other['root']} is locked ({other.get('scope')}) by another request"
    return None


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
