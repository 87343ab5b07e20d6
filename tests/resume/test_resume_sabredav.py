"""SabreDAV partial updates (PATCH + X-Update-Range) with the statuses SabreDAV documents."""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from tests.server_fixtures import DavServer

SABRE = "application/x-sabredav-partialupdate"


@pytest.fixture
def url(shared_dav_server: DavServer, alice: requests.Session) -> str:
    url = f"{shared_dav_server.url}/sabre-{uuid.uuid4().hex[:8]}.txt"
    assert alice.put(url, data=b"0123456789").status_code == 201
    return url


def patch(session: requests.Session, url: str, body: bytes, update_range: str | None,
          content_type: str = SABRE) -> requests.Response:
    headers = {"Content-Type": content_type}
    if update_range is not None:
        headers["X-Update-Range"] = update_range
    return session.patch(url, data=body, headers=headers)


@pytest.mark.parametrize("update_range, body, expected", [
    ("append", b"AB", b"0123456789AB"),
    ("bytes=2-4", b"XYZ", b"01XYZ56789"),
    ("bytes=8-", b"XYZ", b"01234567XYZ"),
    ("bytes=10-", b"XY", b"0123456789XY"),
    ("bytes=-3", b"XYZ", b"0123456XYZ"),
    ("bytes=-2", b"XYZW", b"01234567XYZW"),
    ("bytes=0-9", b"abcdefghij", b"abcdefghij"),
])
def test_patch_ranges(alice, url, update_range, body, expected):
    before = alice.head(url).headers["ETag"]
    r = patch(alice, url, body, update_range)
    assert r.status_code == 204
    assert r.headers["ETag"] and r.headers["ETag"] != before
    got = alice.get(url)
    assert got.content == expected
    assert got.headers["ETag"] == r.headers["ETag"]


def test_patch_large_file_middle(alice, shared_dav_server):
    url = f"{shared_dav_server.url}/sabre-big-{uuid.uuid4().hex[:6]}.bin"
    data = bytearray(os.urandom(5 * 1024 * 1024))
    assert alice.put(url, data=bytes(data)).status_code == 201
    piece = os.urandom(100_000)
    r = patch(alice, url, piece, f"bytes=2000000-{2000000 + len(piece) - 1}")
    assert r.status_code == 204
    data[2_000_000:2_000_000 + len(piece)] = piece
    assert alice.get(url).content == bytes(data)


@pytest.mark.parametrize("update_range", [None, "", "bytes=", "bytes=a-b", "lines=1-2", "bytes=1-2,4-5"])
def test_bad_update_range_is_400(alice, url, update_range):
    assert patch(alice, url, b"x", update_range).status_code == 400
    assert alice.get(url).content == b"0123456789"


def test_wrong_content_type_is_415(alice, url):
    r = patch(alice, url, b"x", "append", "text/plain")
    assert r.status_code == 415
    assert SABRE in r.headers["Accept-Patch"]


def test_missing_content_length_is_411(alice, url):
    r = alice.patch(url, data=iter([b"ab", b"c"]),  # a generator body is sent chunked
                    headers={"Content-Type": SABRE, "X-Update-Range": "append"})
    assert r.status_code == 411
    assert alice.get(url).content == b"0123456789"


@pytest.mark.parametrize("update_range, body", [
    ("bytes=2-4", b"XY"),  # range says 3 bytes, body has 2
    ("bytes=4-2", b"XYZ"),  # end before start
    ("bytes=11-", b"X"),  # starts beyond the end (size 10)
    ("bytes=-11", b"X"),  # more than the file has
])
def test_range_length_mismatch_is_416(alice, url, update_range, body):
    assert patch(alice, url, body, update_range).status_code == 416
    assert alice.get(url).content == b"0123456789"


def test_collection_is_405(alice, shared_dav_server):
    folder = f"{shared_dav_server.url}/sabre-dir-{uuid.uuid4().hex[:6]}"
    assert alice.request("MKCOL", folder).status_code == 201
    assert patch(alice, folder, b"x", "append").status_code == 405


def test_missing_file_is_404(alice, shared_dav_server):
    assert patch(alice, f"{shared_dav_server.url}/nope-{uuid.uuid4().hex}", b"x", "append").status_code == 404


def test_if_match_and_read_only(alice, shared_dav_server, url):
    assert patch(alice, url, b"x", "append").status_code == 204
    r = alice.patch(url, data=b"y", headers={"Content-Type": SABRE, "X-Update-Range": "append",
                                             "If-Match": '"stale"'})
    assert r.status_code == 412
    reader = shared_dav_server.session("reader")
    assert patch(reader, url, b"z", "append").status_code == 403
    assert alice.get(url).content == b"0123456789x"
