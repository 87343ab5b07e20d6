"""Authentication: Basic auth over ``repo.users``, login throttling, read-only users.

* :class:`RepositoryDomainController` is WsgiDAV's domain controller. It checks
  Basic credentials with ``repo.users.verify`` (which caches successful checks, so a
  slow password hash is not paid on every request) and records the user's role.
  Digest auth is not offered: the server never holds plain passwords.
* :class:`provider.throttle.LoginThrottle` counts failed logins per (user,
  address), per user and per address, with backoff, concurrent attempts counted
  before they are checked, and a way in for users who logged in from an address
  before (see that module); refused attempts get ``429`` and a ``Retry-After``
  without their password being checked.
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
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterable
from typing import Any, Callable

from wsgidav import util
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.http_authenticator import HTTPAuthenticator

from davbackup.errors import DavBackupError
from provider.internals import ASSET_SHARE
from provider.throttle import LoginThrottle, ThrottleSettings, client_address

__all__ = [
    "LoginThrottle",
    "RepositoryAuthenticator",
    "RepositoryDomainController",
    "ThrottleSettings",
    "is_read_only",
]

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
#: how long credentials that passed stay known to skip the throttle (at most half
#: of ``trusted_seconds``), and how many are known at once
PASSED_SECONDS = 10.0
MAX_PASSED = 4096


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
        self._secret_key = os.urandom(32)  # identifies equal credentials in flight
        #: credentials that passed the throttle and the password check a moment ago:
        #: (keyed hash of the Authorization header, address) -> (expiry, throttle
        #: failures then); see :meth:`_passed_before`
        self._passed: dict[tuple[bytes, str], tuple[float, int]] = {}
        self._passed_seconds = min(PASSED_SECONDS, settings.trusted_seconds / 2)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if _is_asset_request(environ) and environ["REQUEST_METHOD"].upper() not in ASSET_METHODS:
            return _not_allowed(start_response, ASSET_METHODS)
        return super().__call__(environ, start_response)

    def handle_basic_auth_request(
        self, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        credentials = _parse_basic(header)
        if credentials is None:
            _log.warning("malformed Basic credentials from %s", _address(environ))
            return self.send_basic_auth_response(environ, start_response)
        user_name, password = credentials
        address = client_address(environ, self.throttle.settings)
        realm = self.domain_controller.get_domain_realm(environ["PATH_INFO"], environ)
        passed = (hashlib.blake2b(header.encode("utf-8", "surrogatepass"), key=self._secret_key,
                                  digest_size=16).digest(), address)
        if self._passed_before(passed) and \
                self.domain_controller.basic_auth_user(realm, user_name, password, environ):
            return self._admit(environ, start_response, realm, user_name)
        secret = hashlib.blake2b(
            password.encode("utf-8", "surrogatepass"), key=self._secret_key, digest_size=16
        ).digest()
        failures_before = self.throttle.failures
        verdict = self.throttle.attempt(
            user_name, address, secret,
            lambda: self.domain_controller.basic_auth_user(realm, user_name, password, environ),
        )
        if verdict.retry_after > 0:
            _log.warning("login of user %r from %s refused for %.0f s (throttled)",
                         _short(user_name), address, verdict.retry_after)
            return _too_many_requests(environ, start_response, verdict.retry_after)
        if not verdict.ok:
            self._passed.pop(passed, None)
            _log.warning("login failed for user %r from %s", _short(user_name), address)
            return self.send_basic_auth_response(environ, start_response)
        if len(self._passed) >= MAX_PASSED:
            self._passed = {}
        self._passed[passed] = (time.monotonic() + self._passed_seconds, failures_before)
        return self._admit(environ, start_response, realm, user_name)

    def _passed_before(self, key: tuple[bytes, str]) -> bool:
        """Whether these credentials from this address passed the throttle and the
        password check less than ``PASSED_SECONDS`` ago with no failed login anywhere
        since. Then the throttle would let them through now too (it blocks only after
        failures, and the pair was marked trusted then), so they skip it; the user's
        row is still read and the password checked against it (from the password
        cache), so a changed password, role or removed user counts at once."""
        known = self._passed.get(key)
        return known is not None and known[1] == self.throttle.failures and known[0] > time.monotonic()

    def _admit(self, environ: Environ, start_response: StartResponse, realm: str, user_name: str) -> Iterable[bytes]:
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


def _short(name: str, limit: int = 80) -> str:
    """A user name for the log: never more than ``limit`` characters."""
    return name if len(name) <= limit else name[:limit] + f"...({len(name)} chars)"


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
