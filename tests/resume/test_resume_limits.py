"""Limits and ownership of the resume protocols (issue 8, items 8, 9 and 14).

* another user's request to an upload resource never disturbs the owner's running
  append (the ownership check comes before the preemption);
* a user may hold only so many open upload sessions (``uploads.max_sessions_per_user``),
  and a declared length above ``uploads.max_length`` is refused before anything is
  stored;
* absurd numbers in ``Content-Range``, ``Upload-Length``, ``Upload-Offset``,
  ``Range`` and ``Content-Length`` are answered 400/413/416, never 500.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.resume_fixtures import HalfSent
from tests.server_fixtures import DavServer, launch

PARTIAL = "application/partial-upload"
PREFIX = "/.well-known/davbackup-uploads/"
MAX_SESSIONS = 3
MAX_LENGTH = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    config = f"uploads:\n  max_sessions_per_user: {MAX_SESSIONS}\n  max_length: {MAX_LENGTH}\n"
    srv = launch(tmp_path_factory.mktemp("limits"), config_yaml=config)
    try:
        yield srv
    finally:
        srv.stop()


def url_of(server: DavServer) -> str:
    return f"{server.url}/limits-{uuid.uuid4().hex[:8]}.bin"


def ietf_create(session: requests.Session, url: str, **headers: str) -> requests.Response:
    return session.post(url, data=b"", headers={"Upload-Complete": "?0", **headers})


def cancel_all(server: DavServer, session: requests.Session, responses: list[requests.Response]) -> None:
    for r in responses:
        if r.status_code == 201 and "Location" in r.headers:
            assert session.delete(server.url + r.headers["Location"]).status_code == 204


# --- item 8: ownership before preemption -------------------------------------------------


def test_other_users_cannot_cut_a_running_append(server):
    alice = server.session("alice")
    data = os.urandom(1_000_000)
    url = url_of(server)
    r = ietf_create(alice, url, **{"Upload-Length": str(len(data))})
    assert r.status_code == 201
    loc = server.url + r.headers["Location"]
    running = HalfSent(server.port, "PATCH", urlsplit(loc).path, server.auth("alice"),
                       {"Content-Type": PARTIAL, "Upload-Offset": "0", "Upload-Complete": "?1"}, data, 300_000)
    try:
        time.sleep(0.5)  # the append is running and waits for the rest of its body
        assert server.session("reader").head(loc).status_code == 404
        bob = server.session("bob")
        assert bob.head(loc).status_code == 404
        r = bob.patch(loc, data=b"x", headers={"Content-Type": PARTIAL, "Upload-Offset": "300000",
                                                "Upload-Complete": "?0"})
        assert r.status_code == 404
        assert bob.delete(loc).status_code == 404
        assert running.finish() == 201  # the owner's request was never cut
    finally:
        running.cut()
    assert alice.get(url).content == data


def test_owner_still_preempts_her_own_stalled_append(server):
    alice = server.session("alice")
    data = os.urandom(600_000)
    r = ietf_create(alice, url_of(server), **{"Upload-Length": str(len(data))})
    loc = server.url + r.headers["Location"]
    stalled = HalfSent(server.port, "PATCH", urlsplit(loc).path, server.auth("alice"),
                       {"Content-Type": PARTIAL, "Upload-Offset": "0", "Upload-Complete": "?1"}, data, 200_000)
    try:
        time.sleep(0.5)
        h = alice.head(loc)
        assert h.status_code == 204 and h.headers["Upload-Offset"] == "200000"
    finally:
        stalled.cut()
    assert alice.delete(loc).status_code == 204


# --- item 9: open sessions per user, declared lengths --------------------------------------


def test_open_sessions_per_user_are_limited(server):
    alice = server.session("alice")
    made = [ietf_create(alice, url_of(server)) for _ in range(MAX_SESSIONS)]
    try:
        assert [r.status_code for r in made] == [201] * MAX_SESSIONS
        r = ietf_create(alice, url_of(server))
        assert r.status_code == 429, r.text
        assert "upload" in r.text and str(MAX_SESSIONS) in r.text
        url = url_of(server)
        r = alice.put(url, data=b"abc", headers={"Content-Range": "bytes 0-2/10"})
        assert r.status_code == 429
        assert alice.put(url, data=b"", headers={"Content-Range": "bytes */10"}).headers["Upload-Offset"] == "0"
        # another user has her own allowance; whole-file PUTs are not sessions
        bob = server.session("bob")
        other = ietf_create(bob, url_of(server))
        assert other.status_code == 201
        cancel_all(server, bob, [other])
        assert alice.put(url_of(server), data=b"whole file").status_code == 201
        # cancelling one makes room for one
        cancel_all(server, alice, made[:1])
        again = ietf_create(alice, url_of(server))
        assert again.status_code == 201
        made[0] = again
        assert ietf_create(alice, url_of(server)).status_code == 429
    finally:
        cancel_all(server, alice, made)


def test_completed_uploads_free_their_session(server):
    alice = server.session("alice")
    for _ in range(MAX_SESSIONS + 2):
        url = url_of(server)
        r = alice.put(url, data=b"abc", headers={"Content-Range": "bytes 0-2/6"})
        assert r.status_code == 308
        r = alice.put(url, data=b"def", headers={"Content-Range": "bytes 3-5/6"})
        assert r.status_code == 201
        assert alice.get(url).content == b"abcdef"


def test_declared_length_above_the_limit_is_refused(server):
    alice = server.session("alice")
    url = url_of(server)
    too_big = str(MAX_LENGTH + 1)
    r = alice.put(url, data=b"abc", headers={"Content-Range": f"bytes 0-2/{too_big}"})
    assert r.status_code == 413
    assert alice.put(url, data=b"abc", headers={"Content-Range": f"bytes {MAX_LENGTH}-{MAX_LENGTH + 2}/*"}
                     ).status_code == 413
    r = ietf_create(alice, url, **{"Upload-Length": too_big})
    assert r.status_code == 413
    r = ietf_create(alice, url, **{"Upload-Length": "999999999999999"})  # ~10^15, the issue's case
    assert r.status_code == 413
    r = ietf_create(alice, url, **{"Upload-Length": "1000000000000000"})  # 16 digits: no RFC 9651 Integer
    assert r.status_code == 400
    # an upload of unknown length that later declares too much
    r = ietf_create(alice, url)
    loc = server.url + r.headers["Location"]
    r = alice.patch(loc, data=b"abc", headers={"Content-Type": PARTIAL, "Upload-Offset": "0",
                                                "Upload-Complete": "?0", "Upload-Length": too_big})
    assert r.status_code == 413
    assert alice.head(loc).headers["Upload-Offset"] == "0"
    assert alice.delete(loc).status_code == 204
    # exactly the limit is fine to announce
    r = alice.put(url, data=b"abc", headers={"Content-Range": f"bytes 0-2/{MAX_LENGTH}"})
    assert r.status_code == 308
    assert alice.put(url, data=b"whole").status_code == 201  # supersedes the session
    assert alice.head(url).status_code == 200


def test_default_limits_are_configured(tmp_path: Path):
    from provider.config_file import settings_from_options
    from provider.settings import ServerSettings

    settings = ServerSettings()
    assert 100 <= settings.upload_max_sessions_per_user <= 1000
    assert settings.upload_max_length >= 1 << 40
    custom = settings_from_options({"uploads.max_sessions_per_user": 7, "uploads.max_length": 1 << 30})
    assert (custom.upload_max_sessions_per_user, custom.upload_max_length) == (7, 1 << 30)
    from davbackup.errors import UsageError
    for bad in ({"uploads.max_sessions_per_user": 0}, {"uploads.max_length": 0}):
        with pytest.raises(UsageError):
            settings_from_options(bad)


# --- item 14: absurd numbers ------------------------------------------------------------------


HUGE = "9" * 5000
MALFORMED_RANGE = "malformed Content-Range (want bytes S-E/T or bytes */T)"


def test_absurd_content_range_is_400(server):
    alice = server.session("alice")
    url = url_of(server)
    for header in ("bytes 0-2/9999999999999999999", "bytes 0-2/18446744073709551616",
                   f"bytes 0-2/{HUGE}", f"bytes {HUGE}-{HUGE}/*", "bytes 9999999999999999998-9999999999999999999/*"):
        r = alice.put(url, data=b"abc", headers={"Content-Range": header})
        # a number past 2^63 - 1 is no number at all: malformed, not merely too large
        assert (r.status_code, r.text.strip()) == (400, MALFORMED_RANGE), header
        assert r.headers.get("Upload-Offset") == "0"
    for header in ("bytes */9999999999999999999", f"bytes */{HUGE}"):
        r = alice.put(url, data=b"", headers={"Content-Range": header})
        assert (r.status_code, r.text.strip()) == (400, MALFORMED_RANGE), header
    assert alice.head(url).status_code == 404


def test_absurd_ietf_numbers_are_400(server):
    alice = server.session("alice")
    url = url_of(server)
    for value in ("9999999999999999999", HUGE, "-1", "abc"):
        r = ietf_create(alice, url, **{"Upload-Length": value})
        assert r.status_code == 400, (value[:30], r.status_code)
        assert r.json()["title"].startswith("malformed Upload-Length"), r.text
    r = ietf_create(alice, url)
    loc = server.url + r.headers["Location"]
    for value in ("9999999999999999999", HUGE):
        r = alice.patch(loc, data=b"abc", headers={"Content-Type": PARTIAL, "Upload-Offset": value,
                                                    "Upload-Complete": "?0"})
        assert r.status_code == 400, (value[:30], r.status_code, r.text)
    assert alice.delete(loc).status_code == 204


def test_absurd_range_on_get_is_416_or_whole_file(server):
    alice = server.session("alice")
    url = url_of(server)
    assert alice.put(url, data=b"0123456789").status_code == 201
    r = alice.get(url, headers={"Range": f"bytes={HUGE}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */10"
    r = alice.get(url, headers={"Range": f"bytes={HUGE}-{HUGE}"})
    assert r.status_code == 416
    r = alice.get(url, headers={"Range": f"bytes=2-{HUGE}"})
    assert (r.status_code, r.content) == (206, b"23456789")
    r = alice.get(url, headers={"Range": f"bytes=-{HUGE}"})
    assert (r.status_code, r.content) == (206, b"0123456789")
    r = alice.head(url, headers={"Range": f"bytes={HUGE}-"})
    assert r.status_code == 416


def test_absurd_sabredav_range_is_416(server):
    alice = server.session("alice")
    url = url_of(server)
    assert alice.put(url, data=b"0123456789").status_code == 201
    # a start past the end of the file is 416 (SabreDAV's answer); a number too long to be
    # one is a malformed header, 400
    for value, status in (("bytes=9999999999999999999-", 416), (f"bytes={HUGE}-", 400), (f"bytes=-{HUGE}", 400),
                          ("bytes=9999999999999999998-9999999999999999999", 416)):
        r = alice.patch(url, data=b"ab", headers={"Content-Type": "application/x-sabredav-partialupdate",
                                                   "X-Update-Range": value})
        assert r.status_code == status, (value[:40], r.status_code, r.text)
    assert alice.get(url).content == b"0123456789"


def test_absurd_content_length_is_400(server):
    path = urlsplit(url_of(server)).path
    for extra in ({"Content-Range": "bytes 0-2/3"}, {"Upload-Complete": "?0"}, {}):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            import base64
            token = base64.b64encode(f"alice:{server.password('alice')}".encode()).decode()
            lines = [f"PUT {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Basic {token}",
                     f"Content-Length: {HUGE}"] + [f"{k}: {v}" for k, v in extra.items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\nabc").encode())
            status = int(sock.recv(4096).split(b" ", 2)[1])
        assert 400 <= status < 500, (extra, status)
