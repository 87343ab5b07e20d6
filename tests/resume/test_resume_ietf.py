"""IETF resumable uploads (draft-ietf-httpbis-resumable-upload): creation, offset
retrieval, append, completion, cancellation and the error answers."""

from __future__ import annotations

import os
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from tests.resume_fixtures import HalfSent, sha256_b64
from tests.server_fixtures import DavServer

PARTIAL = "application/partial-upload"
PREFIX = "/.well-known/davbackup-uploads/"


@pytest.fixture
def target(shared_dav_server: DavServer) -> str:
    return f"{shared_dav_server.url}/ietf-{uuid.uuid4().hex[:8]}.bin"


def create(session: requests.Session, url: str, body: bytes = b"", complete: bool = False,
           method: str = "POST", **headers: str) -> requests.Response:
    return session.request(method, url, data=body, headers={
        "Upload-Complete": "?1" if complete else "?0", "Upload-Draft-Interop-Version": "8", **headers})


def append(session: requests.Session, location: str, body: bytes, offset: int, complete: bool,
           **headers: str) -> requests.Response:
    return session.patch(location, data=body, headers={
        "Content-Type": PARTIAL, "Upload-Offset": str(offset), "Upload-Complete": "?1" if complete else "?0",
        **headers})


def location_of(server: DavServer, response: requests.Response) -> str:
    assert response.headers["Location"].startswith(PREFIX)
    return server.url + response.headers["Location"]


def test_careful_creation_append_complete(shared_dav_server, alice, target):
    data = os.urandom(2_000_000)
    r = create(alice, target, **{"Upload-Length": str(len(data))})
    assert r.status_code == 201
    assert r.headers["Upload-Offset"] == "0" and r.headers["Upload-Complete"] == "?0"
    assert r.headers["Upload-Limit"].startswith("max-age=")
    loc = location_of(shared_dav_server, r)

    h = alice.head(loc)
    assert h.status_code == 204
    assert h.headers["Upload-Offset"] == "0"
    assert h.headers["Upload-Complete"] == "?0"
    assert h.headers["Upload-Length"] == str(len(data))
    assert h.headers["Cache-Control"] == "no-store"
    assert int(h.headers["Upload-Limit"].split("=")[1]) > 3600

    r = append(alice, loc, data[:700_000], 0, False)
    assert r.status_code == 204 and r.headers["Upload-Complete"] == "?0"
    assert r.headers["Upload-Offset"] == "700000"
    assert alice.head(loc).headers["Upload-Offset"] == "700000"
    assert alice.head(target).status_code == 404

    r = append(alice, loc, data[700_000:], 700_000, True)
    assert r.status_code == 201 and r.headers["Upload-Complete"] == "?1" and r.headers["ETag"]
    assert alice.get(target).content == data
    h = alice.head(loc)  # a completed upload still answers for a while
    assert h.status_code == 204 and h.headers["Upload-Complete"] == "?1"
    assert h.headers["Upload-Offset"] == str(len(data))


def test_optimistic_creation_completes_in_one_request(shared_dav_server, alice, target):
    data = os.urandom(300_000)
    r = create(alice, target, data, complete=True, method="PUT")
    assert r.status_code == 201 and r.headers["Upload-Complete"] == "?1"
    assert alice.get(target).content == data
    r = create(alice, target, b"new", complete=True, method="PUT")
    assert r.status_code == 204
    assert alice.get(target).content == b"new"


def test_creation_with_first_part_and_unknown_length(shared_dav_server, alice, target):
    data = os.urandom(500_000)
    r = create(alice, target, data[:200_000])
    assert r.status_code == 201 and r.headers["Upload-Offset"] == "200000"
    loc = location_of(shared_dav_server, r)
    assert "Upload-Length" not in alice.head(loc).headers
    r = append(alice, loc, data[200_000:], 200_000, True)
    assert r.status_code == 201
    assert alice.get(target).content == data


def test_offset_mismatch_is_409_with_problem(shared_dav_server, alice, target):
    r = create(alice, target, b"abc")
    loc = location_of(shared_dav_server, r)
    r = append(alice, loc, b"def", 5, False)
    assert r.status_code == 409
    assert r.headers["Upload-Offset"] == "3"
    problem = r.json()
    assert r.headers["Content-Type"] == "application/problem+json"
    assert problem["type"].endswith("#mismatching-upload-offset")
    assert problem["expected-offset"] == 3 and problem["provided-offset"] == 5
    r = append(alice, loc, b"bc", 1, False)  # backwards is refused too
    assert r.status_code == 409 and r.headers["Upload-Offset"] == "3"
    assert alice.head(loc).headers["Upload-Offset"] == "3"


def test_inconsistent_length_is_400(shared_dav_server, alice, target):
    r = create(alice, target, b"abc", **{"Upload-Length": "10"})
    loc = location_of(shared_dav_server, r)
    r = append(alice, loc, b"defg", 3, True)  # 3 + 4 != 10
    assert r.status_code == 400 and r.json()["type"].endswith("#inconsistent-upload-length")
    r = append(alice, loc, b"d", 3, False, **{"Upload-Length": "11"})
    assert r.status_code == 400
    r = append(alice, loc, b"x" * 20, 3, False)  # runs past the length
    assert r.status_code == 400
    assert alice.head(loc).headers["Upload-Offset"] == "3"
    r = create(alice, target, b"abc", complete=True, **{"Upload-Length": "4"})
    assert r.status_code == 400


def test_append_needs_headers_and_media_type(shared_dav_server, alice, target):
    loc = location_of(shared_dav_server, create(alice, target))
    r = alice.patch(loc, data=b"x", headers={"Content-Type": "text/plain", "Upload-Offset": "0",
                                             "Upload-Complete": "?0"})
    assert r.status_code == 415
    r = alice.patch(loc, data=b"x", headers={"Content-Type": PARTIAL, "Upload-Complete": "?0"})
    assert r.status_code == 400
    r = alice.patch(loc, data=b"x", headers={"Content-Type": PARTIAL, "Upload-Offset": "0"})
    assert r.status_code == 400
    r = alice.patch(loc, data=b"x", headers={"Content-Type": PARTIAL, "Upload-Offset": "0",
                                             "Upload-Complete": "yes"})
    assert r.status_code == 400


def test_cancel(shared_dav_server, alice, target):
    loc = location_of(shared_dav_server, create(alice, target, b"abc"))
    assert alice.delete(loc).status_code == 204
    assert alice.head(loc).status_code == 404
    assert append(alice, loc, b"d", 3, True).status_code == 404
    assert alice.delete(loc).status_code == 404
    assert alice.head(target).status_code == 404


def test_append_to_completed_upload(shared_dav_server, alice, target):
    loc = location_of(shared_dav_server, create(alice, target, b"abc"))
    assert append(alice, loc, b"def", 3, True).status_code == 201
    r = append(alice, loc, b"more", 6, True)
    assert r.status_code == 400 and r.json()["type"].endswith("#completed-upload")
    assert alice.get(target).content == b"abcdef"


def test_upload_resources_are_per_user(shared_dav_server, alice, target):
    loc = location_of(shared_dav_server, create(alice, target, b"abc"))
    bob = shared_dav_server.session("bob")
    assert bob.head(loc).status_code == 404
    assert append(bob, loc, b"x", 3, True).status_code == 404
    assert bob.delete(loc).status_code == 404
    assert alice.head(loc).headers["Upload-Offset"] == "3"


def test_digest_mismatch(shared_dav_server, alice, target):
    assert alice.put(target, data=b"old").status_code == 201
    r = create(alice, target, b"abc", **{"Repr-Digest": f"sha-256=:{sha256_b64(b'abcdef')}:"})
    loc = location_of(shared_dav_server, r)
    assert append(alice, loc, b"xyz", 3, True).status_code == 400
    assert alice.get(target).content == b"old"
    r = create(alice, target, b"abc", **{"Repr-Digest": f"sha-256=:{sha256_b64(b'abcdef')}:"})
    assert append(alice, location_of(shared_dav_server, r), b"def", 3, True).status_code == 204
    assert alice.get(target).content == b"abcdef"


def test_options_and_upload_resource_methods(shared_dav_server, alice, target):
    r = alice.options(target)
    assert PARTIAL in r.headers["Accept-Patch"]
    assert "PATCH" in r.headers["Allow"].split(", ")
    loc = location_of(shared_dav_server, create(alice, target))
    r = alice.options(loc)
    assert r.status_code == 200 and PARTIAL in r.headers["Accept-Patch"]
    assert alice.get(loc).status_code == 405
    assert alice.put(loc, data=b"x").status_code == 405


def test_new_request_preempts_a_stalled_append(shared_dav_server, alice, target):
    """A client resumes while its old request still hangs on the server: the old one is
    stopped (keeping what arrived), the offset is fresh, the upload completes intact."""
    data = os.urandom(1_000_000)
    loc = location_of(shared_dav_server, create(alice, target, **{"Upload-Length": str(len(data))}))
    stalled = HalfSent(shared_dav_server.port, "PATCH", urlsplit(loc).path, shared_dav_server.auth(),
                       {"Content-Type": PARTIAL, "Upload-Offset": "0", "Upload-Complete": "?1"}, data, 400_000)
    time.sleep(0.5)
    started = time.monotonic()
    h = alice.head(loc)
    assert time.monotonic() - started < 10
    offset = int(h.headers["Upload-Offset"])
    assert offset == 400_000
    r = append(alice, loc, data[offset:], offset, True)
    assert r.status_code == 201
    assert alice.get(target).content == data
    stalled.cut()


def test_chunked_append_that_breaks_off_does_not_complete(shared_dav_server, alice, target):
    """Without a length, only the chunked body's last chunk says "complete": a body
    that breaks off keeps its bytes and leaves the upload incomplete."""
    loc = location_of(shared_dav_server, create(alice, target))
    import base64
    import socket
    token = base64.b64encode(b"alice:" + shared_dav_server.password("alice").encode()).decode()
    sock = socket.create_connection(("127.0.0.1", shared_dav_server.port))
    head = (f"PATCH {urlsplit(loc).path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
            "Content-Type: application/partial-upload\r\nUpload-Offset: 0\r\nUpload-Complete: ?1\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    sock.sendall(head.encode() + b"5\r\nhello\r\n6\r\n world\r\n")
    time.sleep(0.3)
    sock.close()
    time.sleep(0.3)
    h = alice.head(loc)
    assert h.status_code == 204 and h.headers["Upload-Complete"] == "?0"
    assert h.headers["Upload-Offset"] == "11"
    assert alice.head(target).status_code == 404
    r = alice.patch(loc, data=iter([b"!", b"!"]), headers={
        "Content-Type": PARTIAL, "Upload-Offset": "11", "Upload-Complete": "?1"})
    assert r.status_code == 201
    assert alice.get(target).content == b"hello world!!"


def test_chunked_range_put_keeps_connection_usable(shared_dav_server, alice, target):
    data = os.urandom(300_000)
    for (start, end), expected in zip(((0, 99_999), (100_000, 299_999)), (308, 201)):
        r = alice.put(target, data=iter([data[start:end + 1]]),
                      headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"})
        assert r.status_code == expected
        assert r.headers["Upload-Offset"] == str(end + 1)
        # the same connection answers the next request (the chunked body was read to its end)
        assert alice.get(shared_dav_server.url + "/").status_code == 200
    assert alice.get(target).content == data


def test_server_wide_options_advertise_upload_protocols(shared_dav_server, alice):
    """OPTIONS * (answered by WsgiDAV itself) carries Accept-Patch too."""
    import base64
    import http.client

    port = urlsplit(shared_dav_server.url).port
    user, password = alice.auth
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("OPTIONS", "*", headers={"Authorization": f"Basic {token}"})
        r = conn.getresponse()
        r.read()
    finally:
        conn.close()
    assert r.status == 200
    assert "application/partial-upload" in (r.getheader("Accept-Patch") or "")
