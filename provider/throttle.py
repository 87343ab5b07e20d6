"""Login throttling: stop password guessing without locking out the innocent.

Failed logins are counted, within a sliding window, under three keys:

* **pair** (user name, client address): past ``max_failures`` the pair must wait,
  with a delay that doubles on every further failure (``base_delay_seconds`` up to
  ``max_delay_seconds``); while it waits its password is not even checked (429).
* **account** (user name, any address): the same with a threshold
  ``account_factor`` times higher; it stops a guessing attack on one account spread
  over many addresses.
* **address** (client address, any user name): threshold ``address_factor`` times
  higher; it stops one address from spraying guesses (or random names) over
  many accounts, which would also cost a password hash each.

An account or address block does not lock out the people behind it: a (user,
address) pair that logged in successfully within ``trusted_seconds`` is still
checked, so a user whose address others abused (everyone behind one NAT or proxy)
gets in with the right password. A pair block is never bypassed.

Concurrent attempts count before they are checked: an attempt reserves its place
(``pending``) before the slow password hash runs, and is refused when the failures
plus the attempts in flight reach the limit, so 40 parallel guesses get
``max_failures`` checks, not 40. Identical credentials in flight at once (a client
opening 16 connections) share one check instead of counting 16 times.

Addresses are compared as IPv4 addresses or IPv6 /64 networks. Behind a reverse
proxy every client has the proxy's address; with ``trusted_proxies`` set (off by
default) the address is taken from ``proxy_header`` (``X-Forwarded-For``) for
requests that come from one of those proxies: the right-most entry that is not
itself a trusted proxy.

Memory is bounded: at most ``MAX_KEYS`` failure records and ``MAX_TRUSTED`` trusted
pairs; user names that cannot exist are counted under one key.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from provider.http_limits import address_key

#: what a user name may look like (davbackup.users.USER_NAME); anything else cannot log in
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
INVALID_NAME = "<invalid>"


@dataclass(frozen=True)
class ThrottleSettings:
    """When failed logins start to cost time, and how much."""

    max_failures: int = 5
    window_seconds: float = 300.0
    base_delay_seconds: float = 2.0
    max_delay_seconds: float = 300.0
    #: per client address (over all user names) the threshold is this many times higher
    address_factor: int = 4
    #: per user name (over all addresses) the threshold is this many times higher
    account_factor: int = 4
    #: a pair that logged in within this many seconds passes account and address blocks
    trusted_seconds: float = 30 * 86400.0
    #: comma-separated addresses of reverse proxies whose proxy_header is believed
    trusted_proxies: str = ""
    proxy_header: str = "X-Forwarded-For"


@dataclass
class _Record:
    times: list[float] = field(default_factory=list)
    blocked_until: float = 0.0
    pending: int = 0


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


@dataclass(frozen=True)
class Verdict:
    """The outcome of one login attempt: ``ok``, or ``retry_after`` > 0 if refused
    without a check (429), else a failed check (401)."""

    ok: bool
    retry_after: float = 0.0


class LoginThrottle:
    """Failed-login bookkeeping, thread-safe and bounded in memory."""

    MAX_KEYS = 10_000
    MAX_TRUSTED = 100_000

    def __init__(
        self, settings: ThrottleSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._mutex = threading.Lock()
        self._table: dict[tuple[str, ...], _Record] = {}
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._flights: dict[tuple[str, str, bytes], _Flight] = {}
        #: failed checks so far: a login remembered while this is unchanged cannot be
        #: blocked now (blocks only come from failures, and fade with time)
        self.failures = 0

    # --- the one entry point -------------------------------------------------------

    def attempt(self, user: str, address: str, secret: bytes, check: Callable[[], bool]) -> Verdict:
        """Run ``check`` (the password verification) unless the throttle refuses.

        ``secret`` identifies the credentials (a keyed hash of the password): attempts
        with the same credentials in flight at once share one check.
        """
        user = user if _USER_NAME.fullmatch(user) else INVALID_NAME
        address = address_key(address)
        now = self._clock()
        flight_key = (user, address, secret)
        with self._mutex:
            flight = self._flights.get(flight_key)
            if flight is None:
                wait = self._refusal(user, address, now)
                if wait > 0:
                    return Verdict(False, wait)
                flight = self._flights[flight_key] = _Flight()
                records = self._records(user, address, now)
                for record in records:
                    record.pending += 1
                leader = True
            else:
                leader = False
        if not leader:
            flight.done.wait()
            # the same credentials were just checked: only if they were right, check
            # again (answered from the password cache) to set up this request
            return Verdict(flight.ok and bool(check()))
        ok = False
        try:
            ok = user != INVALID_NAME and bool(check())
        finally:
            with self._mutex:
                for record in records:
                    record.pending -= 1
                if ok:
                    self._succeeded(user, address, self._clock())
                else:
                    self._failed(user, address, self._clock())
                flight.ok = ok
                del self._flights[flight_key]
            flight.done.set()
        return Verdict(ok)

    def retry_after(self, user: str, address: str) -> float:
        """Seconds a new attempt of ``user`` from ``address`` would be refused for."""
        user = user if _USER_NAME.fullmatch(user) else INVALID_NAME
        with self._mutex:
            return self._refusal(user, address_key(address), self._clock())

    # --- internals (under the mutex) --------------------------------------------------

    def _keys(self, user: str, address: str) -> list[tuple[tuple[str, ...], int, bool]]:
        """(key, limit, bypassable by a trusted pair) for one attempt."""
        s = self.settings
        return [
            (("pair", user, address), s.max_failures, False),
            (("user", user), s.max_failures * s.account_factor, True),
            (("addr", address), s.max_failures * s.address_factor, True),
        ]

    def _records(self, user: str, address: str, now: float) -> list[_Record]:
        if len(self._table) >= self.MAX_KEYS:
            self._prune(now)
        return [self._table.setdefault(key, _Record()) for key, _limit, _ in self._keys(user, address)]

    def _refusal(self, user: str, address: str, now: float) -> float:
        trusted = self._is_trusted(user, address, now)
        window = self.settings.window_seconds
        waits = [0.0]
        for key, limit, bypassable in self._keys(user, address):
            if bypassable and trusted:
                continue
            record = self._table.get(key)
            if record is None:
                continue
            if record.blocked_until > now:
                waits.append(record.blocked_until - now)
                continue
            failures = sum(1 for t in record.times if now - t < window)
            allowance = max(1, limit - failures)  # after a delay: one probe at a time
            if record.pending >= allowance:
                waits.append(max(1.0, self.settings.base_delay_seconds))
        return max(waits)

    def _failed(self, user: str, address: str, now: float) -> None:
        s = self.settings
        self.failures += 1
        for key, limit, _ in self._keys(user, address):
            record = self._table.setdefault(key, _Record())
            record.times = [t for t in record.times if now - t < s.window_seconds]
            record.times.append(now)
            excess = len(record.times) - limit
            if excess >= 0:
                delay = min(s.base_delay_seconds * (2 ** min(excess, 32)), s.max_delay_seconds)
                record.blocked_until = max(record.blocked_until, now + delay)

    def _succeeded(self, user: str, address: str, now: float) -> None:
        record = self._table.get(("pair", user, address))
        if record is not None and record.pending == 0:
            del self._table[("pair", user, address)]
        pair = (user, address)
        self._trusted.pop(pair, None)
        self._trusted[pair] = now + self.settings.trusted_seconds
        while len(self._trusted) > self.MAX_TRUSTED:
            self._trusted.popitem(last=False)

    def _is_trusted(self, user: str, address: str, now: float) -> bool:
        expiry = self._trusted.get((user, address))
        return expiry is not None and expiry > now

    def _prune(self, now: float) -> None:
        window = self.settings.window_seconds
        for key in [
            k
            for k, rec in self._table.items()
            if rec.pending == 0 and rec.blocked_until <= now and all(now - t >= window for t in rec.times)
        ]:
            del self._table[key]
        if len(self._table) >= self.MAX_KEYS:  # still full: forget the oldest idle half
            idle = [k for k, rec in self._table.items() if rec.pending == 0]
            for key in idle[: self.MAX_KEYS // 2]:
                del self._table[key]


def client_address(environ: dict[str, Any], settings: ThrottleSettings) -> str:
    """The client's address: the peer, or (from a trusted proxy) the forwarded one."""
    peer = str(environ.get("REMOTE_ADDR") or "?")
    proxies = _proxy_set(settings.trusted_proxies)
    if not proxies or _normal(peer) not in proxies:
        return peer
    header = "HTTP_" + settings.proxy_header.strip().upper().replace("-", "_")
    forwarded = str(environ.get(header) or "")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        hop = _normal(hop)
        if hop in proxies:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed entry: do not trust the rest
        return hop
    return peer


_PROXY_CACHE: dict[str, frozenset[str]] = {}


def _proxy_set(text: str) -> frozenset[str]:
    cached = _PROXY_CACHE.get(text)
    if cached is None:
        cached = frozenset(_normal(p.strip()) for p in text.split(",") if p.strip())
        _PROXY_CACHE[text] = cached
    return cached


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0]))
    except ValueError:
        return address.strip()
