"""Users: names, roles and Argon2id password hashes in the catalog (DESIGN.md §11).

Each user owns one root node: an isolated namespace. Verifying a password costs an
Argon2id derivation (tens of milliseconds, on purpose); a successful verification is
cached for a short time, keyed by the stored hash, so changing a password or removing
the user invalidates it at once.
"""

from __future__ import annotations

import base64
import hmac
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from davbackup import clock, crypto
from davbackup.catalog import Catalog
from davbackup.errors import AlreadyExists, NotFound, UsageError
from davbackup.locks import delete_user_locks
from davbackup.lookup_cache import LookupCache
from davbackup.tree import Tree
from davbackup.upload_sessions import remove_user_sessions

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
ROLES = ("rw", "ro")
CACHE_SECONDS = 60.0
MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created: float
    #: the user's root node, as read with the password hash by :meth:`UserDirectory.verify`
    root_id: int | None = field(default=None, compare=False)

    @property
    def read_only(self) -> bool:
        return self.role == "ro"


def hash_password(password: str, memory_kib: int = 19 * 1024, iterations: int = 2) -> str:
    salt = crypto.random_bytes(16)
    digest = Argon2id(salt=salt, length=32, iterations=iterations, lanes=1, memory_cost=memory_kib).derive(
        password.encode("utf-8")
    )
    b64 = base64.b64encode
    return f"argon2id$m={memory_kib},t={iterations},p=1${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, encoded: str) -> bool:
    try:
        scheme, params, salt_b64, digest_b64 = encoded.split("$")
        if scheme != "argon2id":
            return False
        fields = dict(p.split("=") for p in params.split(","))
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(digest_b64)
        got = Argon2id(
            salt=salt, length=len(expected), iterations=int(fields["t"]), lanes=int(fields["p"]),
            memory_cost=int(fields["m"]),
        ).derive(password.encode("utf-8"))
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(got, expected)


class UserDirectory:
    def __init__(self, catalog: Catalog, tree: Tree) -> None:
        self._catalog = catalog
        self._tree = tree
        self._cache: dict[tuple[str, str, bytes], float] = {}
        self._cache_lock = threading.Lock()
        self._cache_key = crypto.random_bytes(32)
        #: the row verify() checks a password against, per thread until the catalog changes
        self._rows: LookupCache[str, tuple[str, str, float, str, int] | None] = LookupCache()

    def get(self, name: str) -> User | None:
        row = self._catalog.reader().execute(
            "SELECT name, role, created FROM users WHERE name=?", (name,)
        ).fetchone()
        return User(*row) if row else None

    def root_id(self, name: str) -> int:
        row = self._catalog.reader().execute("SELECT root_id FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no user {name!r}")
        return int(row[0])

    def list(self) -> list[User]:
        rows = self._catalog.reader().execute("SELECT name, role, created FROM users ORDER BY name")
        return [User(*r) for r in rows]

    def add(self, name: str, password: str, role: str = "rw", quota: int | None = None) -> User:
        if not USER_NAME.fullmatch(name):
            raise UsageError(f"invalid user name {name!r}: use letters, digits, '.', '_', '@', '-' (max 64)")
        if role not in ROLES:
            raise UsageError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
        _check_strength(password)
        encoded = hash_password(password)

        def txn(conn: sqlite3.Connection) -> User:
            if conn.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise AlreadyExists(f"user {name!r} already exists")
            now = clock.now()
            root = self._tree.insert(conn, None, "\x00root:" + name, True, None, now)
            conn.execute(
                "INSERT INTO users(name, pw_hash, role, root_id, created, quota) VALUES (?, ?, ?, ?, ?, ?)",
                (name, encoded, role, root, now, quota),
            )
            return User(name, role, now)

        return self._catalog.write(txn)

    def set_password(self, name: str, password: str) -> None:
        _check_strength(password)
        encoded = hash_password(password)

        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("UPDATE users SET pw_hash=? WHERE name=?", (encoded, name)).rowcount != 1:
                raise NotFound(f"no user {name!r}")

        self._catalog.write(txn)

    def set_quota(self, name: str, quota: int | None) -> None:
        """Limit the user's live bytes (None: unlimited). Lowering it below what is
        stored refuses further growth but deletes nothing."""
        if quota is not None and quota < 0:
            raise UsageError("a quota cannot be negative")

        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("UPDATE users SET quota=? WHERE name=?", (quota, name)).rowcount != 1:
                raise NotFound(f"no user {name!r}")

        self._catalog.write(txn)

    def usage(self, name: str) -> tuple[int, int | None]:
        """(live bytes, quota or None)."""
        row = self._catalog.reader().execute("SELECT used, quota FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no user {name!r}")
        return int(row[0]), row[1]

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise UsageError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")

        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("UPDATE users SET role=? WHERE name=?", (role, name)).rowcount != 1:
                raise NotFound(f"no user {name!r}")

        self._catalog.write(txn)

    def remove(self, name: str) -> None:
        """Remove a user, everything in their namespace (chunks become gc garbage), their
        upload sessions and their locks."""

        def txn(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT root_id FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no user {name!r}")
            self._tree.purge_owner(conn, row[0])
            remove_user_sessions(conn, name)
            delete_user_locks(conn, name)
            conn.execute("DELETE FROM users WHERE name=?", (name,))

        self._catalog.write(txn)

    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is right, else None (never says which part was wrong)."""
        row = self._rows.lookup(self._catalog, name, lambda conn: _verify_row(conn, name))
        if row is None:
            check_password(password, _DUMMY_HASH)  # same cost whether or not the user exists
            return None
        user, encoded = User(row[0], row[1], row[2], int(row[4])), row[3]
        key = (name, encoded, crypto.keyed_hash(self._cache_key, password.encode("utf-8")))
        now = time.monotonic()
        with self._cache_lock:
            expiry = self._cache.get(key)
            if expiry is not None and expiry > now:
                return user
        if not check_password(password, encoded):
            return None
        with self._cache_lock:
            if len(self._cache) > 10000:
                self._cache = {k: v for k, v in self._cache.items() if v > now}
            self._cache[key] = now + CACHE_SECONDS
        return user


def _verify_row(conn: sqlite3.Connection, name: str) -> tuple[str, str, float, str, int] | None:
    """What :meth:`UserDirectory.verify` needs of the user's row. Every request asks:
    with SQLite it is remembered per thread until any commit (``PRAGMA data_version``,
    :mod:`davbackup.lookup_cache`), so a removed user, a changed password or role counts
    from the next request on, from this process or another; a shared catalog is asked."""
    row = conn.execute("SELECT name, role, created, pw_hash, root_id FROM users WHERE name=?", (name,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]), row[2], str(row[3]), int(row[4]))


# -- the users table for the file system, history and maintenance ---------------------


def charge(conn: sqlite3.Connection, root_id: int, delta: int) -> None:
    """Inside a change's transaction: add ``delta`` bytes to the live bytes of the user
    whose root is ``root_id`` (negative: bytes removed)."""
    conn.execute("UPDATE users SET used = used + ? WHERE root_id=?", (delta, root_id))


def charge_and_usage(conn: sqlite3.Connection, root_id: int, delta: int) -> tuple[int, int | None] | None:
    """:func:`charge`, then :func:`usage_of_root`, in one statement."""
    rows = conn.execute("UPDATE users SET used = used + ? WHERE root_id=? RETURNING used, quota",
                        (delta, root_id)).fetchall()  # stepped to the end: the statement is done
    return None if not rows else (int(rows[0][0]), None if rows[0][1] is None else int(rows[0][1]))


def usage_of_root(conn: sqlite3.Connection, root_id: int) -> tuple[int, int | None] | None:
    """(live bytes, quota or None) of the user whose root is ``root_id``; None if no user has it."""
    row = conn.execute("SELECT used, quota FROM users WHERE root_id=?", (root_id,)).fetchone()
    return None if row is None else (int(row[0]), None if row[1] is None else int(row[1]))


def name_of_root(conn: sqlite3.Connection, root_id: int) -> str | None:
    row = conn.execute("SELECT name FROM users WHERE root_id=?", (root_id,)).fetchone()
    return None if row is None else str(row[0])


def root_ids(conn: sqlite3.Connection) -> list[int]:
    """The root node of every user."""
    return [int(r[0]) for r in conn.execute("SELECT root_id FROM users")]


def names_and_roots(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """(name, root node ID) of every user."""
    return [(str(r[0]), int(r[1])) for r in conn.execute("SELECT name, root_id FROM users").fetchall()]


def count_users(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM users").fetchone()[0])


def rootless(conn: sqlite3.Connection) -> list[str]:
    """Users whose root folder is missing (recover: a catalog rebuilt without it)."""
    return [str(r[0]) for r in conn.execute(
        "SELECT name FROM users u WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = u.root_id)"
    ).fetchall()]


def _check_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"password too short: use at least {MIN_PASSWORD} characters")


#: checked against when the user does not exist, so that an unknown name costs what a
#: wrong password does: the parameters of :func:`hash_password`, a random salt and a
#: random digest that no known password has (written out: hashing one at import cost
#: every command ~70 ms of CPU and the server a 19 MiB allocation at its start)
_DUMMY_HASH = "argon2id$m=19456,t=2,p=1$DjE7culMXK1bv83ruXb28Q==$v4hVr3ZnuvqD/rkyI7zL8zlPnc+dF/Tcqy4m1XQMlSQ="
