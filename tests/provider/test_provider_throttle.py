"""Login throttling (issue 8 item 5): per pair, account and address with backoff;
trusted pairs still get in; concurrent guesses count before they are checked; the
trusted proxy header. Units over the real throttle, then over a real server."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from provider.throttle import LoginThrottle, ThrottleSettings, client_address
from tests.inprocess_server import inprocess_app_server
from tests.server_fixtures import DEFAULT_USERS, launch


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, user: str, address: str) -> float:
    """One wrong password; the retry-after if refused without a check (else 0)."""
    verdict = throttle.attempt(user, address, os.urandom(8), lambda: False)
    assert not verdict.ok
    return verdict.retry_after


def succeed(throttle: LoginThrottle, user: str, address: str) -> bool:
    return throttle.attempt(user, address, b"right", lambda: True).ok


def test_pair_delays_double_cap_and_expire() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(ThrottleSettings(max_failures=3, window_seconds=60,
                                              base_delay_seconds=2, max_delay_seconds=10),
                             clock=clock)
    for _ in range(2):
        assert fail(throttle, "u", "1.2.3.4") == 0
    assert throttle.retry_after("u", "1.2.3.4") == 0
    assert fail(throttle, "u", "1.2.3.4") == 0  # the third failure is checked and starts a delay
    assert throttle.retry_after("u", "1.2.3.4") == pytest.approx(2)
    assert fail(throttle, "u", "1.2.3.4") == pytest.approx(2)  # refused, not checked
    assert not throttle.attempt("u", "1.2.3.4", b"right", lambda: True).ok  # even the right one
    clock.now += 2
    assert fail(throttle, "u", "1.2.3.4") == 0  # one probe after the delay ...
    assert throttle.retry_after("u", "1.2.3.4") == pytest.approx(4)  # ... doubles it
    for _ in range(5):
        clock.now += 11  # each probe after the (capped) delay, all within the window
        fail(throttle, "u", "1.2.3.4")
    assert throttle.retry_after("u", "1.2.3.4") == pytest.approx(10)  # capped
    assert throttle.retry_after("u", "5.6.7.8") == 0
    assert throttle.retry_after("v", "1.2.3.4") == 0
    clock.now += 100
    assert succeed(throttle, "u", "1.2.3.4")
    assert throttle.retry_after("u", "1.2.3.4") == 0  # success clears the pair


def test_address_block_lets_known_users_in() -> None:
    """Random user names sprayed from one address (a NAT, a proxy) block that address
    for new names, but not a user who logged in from there before."""
    clock = FakeClock()
    throttle = LoginThrottle(ThrottleSettings(max_failures=3, address_factor=2,
                                              base_delay_seconds=30), clock=clock)
    assert succeed(throttle, "alice", "9.9.9.9")
    for i in range(6):
        fail(throttle, f"random{i}", "9.9.9.9")
    assert fail(throttle, "random-next", "9.9.9.9") > 0  # refused without a check
    assert throttle.retry_after("carol", "9.9.9.9") > 0  # never logged in from here
    assert succeed(throttle, "alice", "9.9.9.9")  # the right password still gets in
    assert throttle.retry_after("alice", "9.9.9.9") == 0
    assert throttle.retry_after("carol", "8.8.8.8") == 0  # other addresses unaffected
    # IPv6: one /64 is one address
    for i in range(6):
        fail(throttle, f"v6-{i}", f"2001:db8::{i + 1}")
    assert throttle.retry_after("someone", "2001:db8::ffff") > 0
    assert throttle.retry_after("someone", "2001:db8:1::1") == 0


def test_account_block_over_many_addresses() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(ThrottleSettings(max_failures=3, account_factor=2,
                                              base_delay_seconds=30), clock=clock)
    assert succeed(throttle, "alice", "10.0.0.1")
    for i in range(6):
        fail(throttle, "alice", f"192.0.2.{i}")
    assert throttle.retry_after("alice", "192.0.2.200") > 0  # a new address: refused
    assert throttle.retry_after("bob", "192.0.2.200") == 0
    assert succeed(throttle, "alice", "10.0.0.1")  # her usual address still works


def test_concurrent_guesses_count_before_they_are_checked() -> None:
    throttle = LoginThrottle(ThrottleSettings(max_failures=5, base_delay_seconds=30))
    checks = []
    lock = threading.Lock()

    def slow_wrong() -> bool:
        with lock:
            checks.append(1)
        time.sleep(0.2)
        return False

    def guess(i: int) -> tuple[bool, float]:
        verdict = throttle.attempt("alice", "203.0.113.7", b"guess-%d" % i, slow_wrong)
        return verdict.ok, verdict.retry_after

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(guess, range(40)))
    assert len(checks) <= 5
    assert sum(1 for ok, wait in results if wait > 0) >= 35
    assert not any(ok for ok, _ in results)


def test_identical_credentials_in_flight_share_one_check() -> None:
    """A client opening 16 connections at once with the right password is not
    mistaken for 16 guesses."""
    throttle = LoginThrottle(ThrottleSettings(max_failures=2))
    checks = []

    def slow_right() -> bool:
        checks.append(1)
        time.sleep(0.1 if len(checks) == 1 else 0)
        return True

    with ThreadPoolExecutor(16) as pool:
        verdicts = list(pool.map(
            lambda _: throttle.attempt("alice", "198.51.100.1", b"same", slow_right), range(16)))
    assert all(v.ok for v in verdicts)
    assert len(checks) <= 16  # followers re-check (from the password cache) only after a success


def test_invalid_names_share_one_key() -> None:
    throttle = LoginThrottle(ThrottleSettings(max_failures=2, address_factor=1000))
    for i in range(50):
        throttle.attempt("x" * 1000 + str(i), "192.0.2.1", b"p", lambda: True)
    assert len(throttle._table) <= 3  # noqa: SLF001 - the bound is the point
    assert not throttle.attempt("bad name with spaces", "192.0.2.9", b"p", lambda: True).ok


def test_client_address_and_trusted_proxies() -> None:
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.5, 10.0.0.2"}
    assert client_address(environ, ThrottleSettings()) == "127.0.0.1"  # off by default
    proxies = ThrottleSettings(trusted_proxies="127.0.0.1, 10.0.0.2")
    assert client_address(environ, proxies) == "203.0.113.5"
    assert client_address({**environ, "REMOTE_ADDR": "192.0.2.1"}, proxies) == "192.0.2.1"
    spoofed = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 203.0.113.9"}
    assert client_address(spoofed, proxies) == "203.0.113.9"  # the right-most untrusted hop
    assert client_address({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "junk"},
                          proxies) == "127.0.0.1"
    custom = ThrottleSettings(trusted_proxies="::1", proxy_header="X-Real-IP")
    assert client_address({"REMOTE_ADDR": "::1", "HTTP_X_REAL_IP": "2001:db8::5"},
                          custom) == "2001:db8::5"


# --- over a real server ------------------------------------------------------------------------


def test_server_throttle_spray_parallel_and_known_user(tmp_path: Path) -> None:
    server = launch(tmp_path / "throttle", config_yaml=(
        "auth:\n  max_failures: 4\n  address_factor: 3\n  base_delay_seconds: 60\n"))
    try:
        url = server.url + "/"
        assert requests.get(url, auth=server.auth("alice")).status_code == 200
        # 40 parallel guesses of bob's password: at most 4 are checked
        with ThreadPoolExecutor(40) as pool:
            statuses = list(pool.map(
                lambda i: requests.get(url, auth=("bob", f"guess-{i}"), timeout=60).status_code,
                range(40)))
        assert statuses.count(401) <= 4 and statuses.count(429) >= 36, statuses
        # random names sprayed from this address block it for names never seen here ...
        for i in range(12):
            requests.get(url, auth=(f"nobody{i}", "whatever-pw"), timeout=60)
        assert requests.get(url, auth=server.auth("reader")).status_code == 429
        # ... but alice, who logged in from here before, still gets in
        assert requests.get(url, auth=server.auth("alice")).status_code == 200
        # bob is blocked on this address (his own pair), whatever he sends
        assert requests.get(url, auth=server.auth("bob")).status_code == 429
        assert "guess-" not in server.log()
    finally:
        server.stop()


def test_server_trusted_proxy_header(tmp_path: Path) -> None:
    server = launch(tmp_path / "proxy", config_yaml=(
        "auth:\n  max_failures: 2\n  base_delay_seconds: 60\n  trusted_proxies: 127.0.0.1\n"))
    try:
        url = server.url + "/"
        via = lambda ip: {"X-Forwarded-For": ip}  # noqa: E731
        for _ in range(2):
            assert requests.get(url, auth=("alice", "wrong-pw"), headers=via("198.51.100.1")).status_code == 401
        assert requests.get(url, auth=server.auth("alice"), headers=via("198.51.100.1")).status_code == 429
        assert requests.get(url, auth=server.auth("alice"), headers=via("198.51.100.2")).status_code == 200
    finally:
        server.stop()


def test_proxy_header_ignored_by_default(tmp_path: Path) -> None:
    server = launch(tmp_path / "noproxy", config_yaml="auth:\n  max_failures: 2\n  base_delay_seconds: 60\n")
    try:
        url = server.url + "/"
        for i in range(2):
            requests.get(url, auth=("alice", "wrong-pw"), headers={"X-Forwarded-For": f"203.0.113.{i}"})
        blocked = requests.get(url, auth=server.auth("alice"), headers={"X-Forwarded-For": "203.0.113.99"})
        assert blocked.status_code == 429
    finally:
        server.stop()


def test_remembered_logins_still_meet_password_changes_roles_and_blocks(tmp_path: Path) -> None:
    """Credentials that just passed skip the throttle for a few seconds (provider/auth.py),
    but the user's row is still read on every request, and any failed login sends them
    through the throttle again: a pair block is never bypassed."""
    settings = ThrottleSettings(max_failures=2, base_delay_seconds=60)
    with inprocess_app_server(tmp_path / "remembered", throttle=settings) as (url, repo):
        bob = ("bob", DEFAULT_USERS["bob"][0])
        alice = ("alice", DEFAULT_USERS["alice"][0])
        with requests.Session() as s:  # one keep-alive connection, as clients do
            for _ in range(3):
                assert s.get(url + "/", auth=bob, timeout=60).status_code == 200
            assert s.put(url + "/b.txt", data=b"b", auth=bob, timeout=60).status_code == 201
            repo.users.set_role("bob", "ro")
            assert s.put(url + "/b.txt", data=b"b", auth=bob, timeout=60).status_code == 403
            repo.users.set_password("bob", "bob-new-password")
            assert s.get(url + "/", auth=bob, timeout=60).status_code == 401  # at once
            assert s.get(url + "/", auth=("bob", "bob-new-password"), timeout=60).status_code == 200
            for _ in range(3):
                assert s.get(url + "/", auth=alice, timeout=60).status_code == 200
            for _ in range(2):
                assert s.get(url + "/", auth=("alice", "wrong-pw"), timeout=60).status_code == 401
            assert s.get(url + "/", auth=alice, timeout=60).status_code == 429
            repo.users.remove("bob")
            assert s.get(url + "/", auth=("bob", "bob-new-password"), timeout=60).status_code == 401
