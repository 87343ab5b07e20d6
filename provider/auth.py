"""Authentication: Basic auth over ``repo.users``, login throttling, read-only users.

* :class:`RepositoryDomainController` is WsgiDAV's domain controller. It checks
  Basic credentials with ``repo.users.verify`` (which caches successful checks, so a
  slow password hash is not paid on every request) and records the user's role.
  Digest auth is not offered: the server never holds plain passwords.
* :class:`LoginThrottle` counts failed logins per (user, client address) and per
  client address. Past a threshold within a window a client must wait, with a delay
  that doubles on every further failure; while it waits it gets ``429`` and a
  ``Retry-After`` without its password being checked.
* :class:`RepositoryAuthenticator` is WsgiDAV's ``HTTPAuthenticator`` with four
  changes: malformed ``Authorization`` headers get 401 instead of a 500, throttled
  clients get 429, users with role ``ro`` get 403 for every method that is not
  a read (so also for PATCH, which WsgiDAV itself answers with 405), and the one
  share that needs no login, the dir browser's assets (``/:dir_browser``), answers
  only GET, HEAD and OPTIONS: anything else is 405 before WsgiDAV sees it (a LOCK
  there used to write lock rows into the catalog without credentials).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

from wsgidav import util
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.http_authenticator import HTTPAuthenticator

from davbackup.errors import DavBackupError
from provider.internals import ASSET_SHARE

_log = logging.getLogger(__name__)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

#: Methods a read-only user may use. Everything else is refused with 403.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
#: Methods the public asset share (CSS, icons of the HTML listing) answers.
ASSET_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

ROLE_READ_WRITE = "rw"
ROLE_READ_ONLY = "ro"

#: environ key holding the authenticated ``User`` record.
USER_KEY = "davbackup.user"


@dataclass(frozen=True)
class ThrottleSettings:
    """When failed logins start to cost time, and how much."""

    max_failures: int = 5
    window_seconds: float = 300.0
    base_delay_seconds: float = 2.0
    max_delay_seconds: float = 300.0
    #: per client address (over all user names) the threshold is this many times higher
    address_factor: int = 4


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    blocked_until: float = 0.0


class LoginThrottle:
    """Failed-login bookkeeping, thread-safe and bounded in memory."""

    MAX_KEYS = 10_000

    def __init__(
        self, settings: ThrottleSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._mutex = threading.Lock()
        self._table: dict[tuple[str, ...], _Failures] = {}

    def _keys(self, user: str, address: str) -> list[tuple[tuple[str, ...], int]]:
        s = self.settings
        return [(("user", user, address), s.max_failures),
                (("addr", address), s.max_failures * s.address_factor)]

    def retry_after(self, user: str, address: str) -> float:
        """Seconds the client must still wait before it may try again (0 = go ahead)."""
        now = self._clock()
        with self._mutex:
            waits = [
                self._table[key].blocked_until - now
                for key, _limit in self._keys(user, address)
                if key in self._table
            ]
        return max([0.0, *waits])

    def failed(self, user: str, address: str) -> None:
        now = self._clock()
        s = self.settings
        with self._mutex:
            if len(self._table) >= self.MAX_KEYS:
                self._prune(now)
            for key, limit in self._keys(user, address):
                record = self._table.setdefault(key, _Failures())
                record.times = [t for t in record.times if now - t < s.window_seconds]
                record.times.append(now)
                excess = len(record.times) - limit
                if excess >= 0:
                    delay = min(s.base_delay_seconds * (2**excess), s.max_delay_seconds)
                    record.blocked_until = max(record.blocked_until, now + delay)

    def succeeded(self, user: str, address: str) -> None:
        with self._mutex:
            self._table.pop(("user", user, address), None)

    def _prune(self, now: float) -> None:
        window = self.settings.window_seconds
        for key in [
            k
            for k, rec in self._table.items()
            if rec.blocked_until <= now and all(now - t >= window for t in rec.times)
        ]:
            del self._table[key]
        if len(self._table) >= self.MAX_KEYS:  # still full: forget the oldest half
            for key in list(self._table)[: self.MAX_KEYS // 2]:
                del self._table[key]


class RepositoryDomainController(BaseDomainController):
    """Basic auth against ``repo.users``; one realm for the whole server."""

    REALM = "davbackup"

    def __init__(self, wsgidav_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, config)
        self.repo = config["davbackup"]["repository"]

    def __str__(self) -> str:
        return f"{type(self).__name__}()"

    def get_domain_realm(self, path_info: str, environ: Environ | None) -> str:
        if environ is not None and _is_asset_request(environ):
            return ASSET_SHARE
        return self.REALM

    def require_authentication(self, realm: str, environ: Environ | None) -> bool:
        # The dir browser's static assets (CSS, icons) are public; nothing else is.
        return realm != ASSET_SHARE

    def basic_auth_user(
        self, realm: str, user_name: str, password: str, environ: Environ
    ) -> bool:
        try:
            user = self.repo.users.verify(user_name, password)
        except DavBackupError as exc:
            _log.warning("login check for %r failed: %s", user_name, exc.message)
            return False
        if user is None:
            return False
        environ[USER_KEY] = user
        environ["wsgidav.auth.roles"] = (
            ("reader",) if user.role == ROLE_READ_ONLY else ("editor",)
        )
        return True

    def supports_http_digest_auth(self) -> bool:
        return False


class RepositoryAuthenticator(HTTPAuthenticator):
    """HTTPAuthenticator with throttling, robust header parsing and read-only users."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        settings = config["davbackup"].get("throttle") or ThrottleSettings()
        self.throttle = LoginThrottle(settings)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if _is_asset_request(environ) and environ["REQUEST_METHOD"].upper() not in ASSET_METHODS:
            return _not_allowed(start_response, ASSET_METHODS)
        return super().__call__(environ, start_response)

    def handle_basic_auth_request(
        self, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        credentials = _parse_basic(environ.get("HTTP_AUTHORIZATION", ""))
        if credentials is None:
            _log.warning("malformed Basic credentials from %s", _address(environ))
            return self.send_basic_auth_response(environ, start_response)
        user_name, password = credentials
        address = _address(environ)

        wait = self.throttle.retry_after(user_name, address)
        if wait > 0:
            return _too_many_requests(environ, start_response, wait)

        realm = self.domain_controller.get_domain_realm(environ["PATH_INFO"], environ)
        if not self.domain_controller.basic_auth_user(realm, user_name, password, environ):
            self.throttle.failed(user_name, address)
            _log.warning("login failed for user %r from %s", user_name, address)
            return self.send_basic_auth_response(environ, start_response)

        self.throttle.succeeded(user_name, address)
        environ["wsgidav.auth.realm"] = realm
        environ["wsgidav.auth.user_name"] = user_name
        if is_read_only(environ) and environ["REQUEST_METHOD"].upper() not in READ_METHODS:
            return _forbidden(environ, start_response, user_name)
        return self.next_app(environ, start_response)


def is_read_only(environ: Environ) -> bool:
    """Whether the authenticated user of this request may only read."""
    user = environ.get(USER_KEY)
    return user is not None and user.role != ROLE_READ_WRITE


def _is_asset_request(environ: Environ) -> bool:
    provider = environ.get("wsgidav.provider")
    return getattr(provider, "share_path", None) == ASSET_SHARE


def _address(environ: Environ) -> str:
    return str(environ.get("REMOTE_ADDR") or "?")


def _parse_basic(header: str) -> tuple[str, str] | None:
    """``(user, password)`` from a Basic ``Authorization`` header, or None if malformed."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


def _too_many_requests(
    environ: Environ, start_response: StartResponse, wait: float
) -> list[bytes]:
    body = b"Too many failed logins: try again later.\n"
    start_response(
        "429 Too Many Requests",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Retry-After", str(max(1, math.ceil(wait)))),
            ("Date", util.get_rfc1123_time()),
        ],
    )
    return [body]


def _not_allowed(start_response: StartResponse, allowed: Iterable[str]) -> list[bytes]:
    body = b"The dir browser's assets can only be read.\n"
    start_response(
        "405 Method Not Allowed",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Allow", ", ".join(sorted(allowed))),
            ("Date", util.get_rfc1123_time()),
        ],
    )
    return [body]


def _forbidden(environ: Environ, start_response: StartResponse, user: str) -> list[bytes]:
    body = f"User {user!r} has read-only access.\n".encode()
    start_response(
        "403 Forbidden",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Date", util.get_rfc1123_time()),
        ],
    )
    return [body]
