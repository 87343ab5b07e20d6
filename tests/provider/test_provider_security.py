"""The WebDAV server over real HTTP, security: users isolated from each other,
read-only users, authentication and throttling, path traversal, hostile XML."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.provider_http_helpers import (
    LOCK_BODY,
    XML,
    dead_prop,
    lock,
    lock_token,
    multistatus,
    propfind,
    proppatch,
    raw_request,
)
from tests.server_fixtures import DavServer, launch

# --- users: isolation, read-only, authentication -----------------------------------------------


def test_users_are_isolated(server: DavServer, alice: requests.Session) -> None:
    name = f"/iso-{uuid.uuid4().hex[:8]}"
    url = server.url + name
    alice.request("MKCOL", url)
    alice.put(url + "/secret.txt", data=b"alice only")
    proppatch(alice, url + "/secret.txt", "tag", "alice")
    alice_token = lock_token(lock(alice, url + "/secret.txt"))
    with server.session("bob") as bob:
        assert bob.get(url + "/secret.txt").status_code == 404
        assert bob.head(url + "/secret.txt").status_code == 404
        assert bob.options(url + "/secret.txt").status_code == 404
        assert propfind(bob, url, "1").status_code == 404
        assert bob.delete(url + "/secret.txt").status_code == 404
        assert bob.request("MOVE", url + "/secret.txt",
                           headers={"Destination": server.url + "/stolen.txt"}).status_code == 404
        assert bob.request("COPY", url + "/secret.txt",
                           headers={"Destination": server.url + "/stolen.txt"}).status_code == 404
        assert proppatch(bob, url + "/secret.txt", "tag", "bob").status_code == 404
        assert bob.request("UNLOCK", url + "/secret.txt",
                           headers={"Lock-Token": f"<{alice_token}>"}).status_code == 404
        assert bob.request("MKCOL", url + "/x").status_code == 409
        # bob's own tree: the same path is his, and alice's lock does not apply to it
        assert bob.request("MKCOL", url).status_code == 201
        assert bob.put(url + "/secret.txt", data=b"bob's").status_code == 201
        assert proppatch(bob, url + "/secret.txt", "tag", "bob").status_code == 207
        bob_lock = lock(bob, url + "/secret.txt")
        assert bob_lock.status_code == 200
        listing = multistatus(propfind(bob, server.url + "/", "1"))
        assert not any(href.startswith("/t-") for href in listing)  # alice's test dirs
        # alice's token does not unlock bob's lock
        assert bob.request("UNLOCK", url + "/secret.txt",
                           headers={"Lock-Token": f"<{alice_token}>"}).status_code == 409
        assert bob.request("UNLOCK", url + "/secret.txt", headers={
            "Lock-Token": bob_lock.headers["Lock-Token"]}).status_code == 204
    assert alice.get(url + "/secret.txt").content == b"alice only"
    assert dead_prop(alice, url + "/secret.txt", "tag") == "alice"
    assert alice.put(url + "/secret.txt", data=b"x").status_code == 423
    alice.request("UNLOCK", url + "/secret.txt", headers={"Lock-Token": f"<{alice_token}>"})


@pytest.mark.parametrize("method", ["PUT", "DELETE", "MKCOL", "COPY", "MOVE", "PROPPATCH",
                                    "LOCK", "UNLOCK", "PATCH", "POST"])
def test_read_only_user_cannot_write(server: DavServer, method: str) -> None:
    headers = {"Destination": server.url + "/elsewhere", "Lock-Token": "<opaquelocktoken:x>"}
    body = LOCK_BODY if method == "LOCK" else None
    with server.session("reader") as reader:
        response = reader.request(method, server.url + "/ro-target", headers=headers, data=body)
        assert response.status_code == 403
        assert reader.head(server.url + "/ro-target").status_code == 404


def test_read_only_user_can_read(server: DavServer) -> None:
    with server.session("reader") as reader:
        assert reader.head(server.url + "/").status_code == 200
        assert propfind(reader, server.url + "/", "1").status_code == 207
        options = reader.request("OPTIONS", server.url + "/")
        assert options.status_code == 200
        assert "PUT" not in options.headers["Allow"] and "DELETE" not in options.headers["Allow"]
        page = reader.get(server.url + "/")
        assert "read-only" in page.text and "read-write" not in page.text


def test_authentication_required(server: DavServer) -> None:
    anonymous = requests.get(server.url + "/")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(server.url + "/", auth=("alice", "wrong-password")).status_code == 401
    assert requests.get(server.url + "/", auth=("nobody", "whatever-pw")).status_code == 401
    for header in ("Basic !!!notbase64", "Basic " + "bm9jb2xvbg==", "Digest username=x"):
        assert requests.get(server.url + "/", headers={"Authorization": header}).status_code == 401


def test_failed_logins_are_throttled(tmp_path) -> None:
    server = launch(tmp_path / "throttle", config_yaml=(
        "auth:\n  max_failures: 3\n  base_delay_seconds: 30\n  window_seconds: 60\n"))
    try:
        url = server.url + "/"
        statuses = [requests.get(url, auth=("alice", f"bad-{i}")).status_code for i in range(3)]
        assert statuses == [401, 401, 401]
        blocked = requests.get(url, auth=("alice", "bad-again"))
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) > 0
        # while blocked, even the right password is not checked
        assert requests.get(url, auth=server.auth("alice")).status_code == 429
        # other users are not affected
        assert requests.get(url, auth=server.auth("bob")).status_code == 200
    finally:
        server.stop()


# --- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/../etc/passwd", "/%2e%2e/etc/passwd",
                                  "/a/%2E%2E/%2e%2e/x", "/./../x"])
@pytest.mark.parametrize("method", ["GET", "PUT", "PROPFIND", "DELETE", "MKCOL"])
def test_path_traversal_refused(server: DavServer, path: str, method: str) -> None:
    body = b"x" if method == "PUT" else None
    assert raw_request(server, method, path, body=body)[0] == 400


@pytest.mark.parametrize("path", ["/..%2f..%2fescape", "/a%2Fb.txt", "/dir%2f"])
def test_encoded_slash_is_refused(server: DavServer, alice: requests.Session, path: str) -> None:
    """``%2F`` in a path is refused before anything reads it (400, with the reason), so
    it can neither split a name into segments nor be stored as part of one."""
    before = propfind(alice, server.url + "/").text
    status, body = raw_request(server, "PUT", path, body=b"x")
    assert (status, body) == (400, b"The request path must not contain an encoded '/' (%2F).\n")
    assert raw_request(server, "GET", path)[0] == 400
    assert propfind(alice, server.url + "/").text == before


def test_destination_outside_root_refused(alice: requests.Session, base: str,
                                          server: DavServer) -> None:
    """A Destination that climbs above the root is a bad request (400); one on another
    server is RFC 4918's 502 (Bad Gateway). The source stays where it was."""
    alice.put(base + "f.txt", data=b"x")
    for destination, status in ((server.url + "/../../etc/x", 400), ("http://elsewhere.example/f.txt", 502)):
        moved = alice.request("MOVE", base + "f.txt", headers={"Destination": destination})
        assert moved.status_code == status, (destination, moved.status_code, moved.text)
    assert alice.get(base + "f.txt").content == b"x"


@pytest.mark.parametrize("path", ["/nul%00byte.txt", "/dir%00/x"])
def test_encoded_nul_refused(server: DavServer, alice: requests.Session, path: str) -> None:
    assert raw_request(server, "PUT", path, body=b"x")[0] == 400
    assert raw_request(server, "GET", path)[0] == 400
    assert raw_request(server, "MKCOL", path)[0] == 400
    names = multistatus(propfind(alice, server.url + "/", "1"))
    assert not any("nul" in href or "\x00" in href for href in names)


def test_invalid_utf8_path_refused(server: DavServer) -> None:
    assert raw_request(server, "GET", "/bad%ff%fe.txt")[0] == 400


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>
<x:color xmlns:x="urn:test">&lol4;</x:color></D:prop></D:set></D:propertyupdate>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>
<x:color xmlns:x="urn:test">&xxe;</x:color></D:prop></D:set></D:propertyupdate>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY,
                                  "<D:propertyupdate xmlns:D='DAV:'><D:set>",
                                  "not xml at all"])
def test_hostile_xml_refused_without_effect(alice: requests.Session, base: str,
                                            body: str) -> None:
    alice.put(base + "target.txt", data=b"x")
    response = alice.request("PROPPATCH", base + "target.txt", data=body, headers=XML)
    assert response.status_code == 400
    assert dead_prop(alice, base + "target.txt", "color") is None
    assert b"root:" not in response.content


def test_hostile_xml_in_lock_and_propfind(alice: requests.Session, base: str) -> None:
    locked = alice.request("LOCK", base + "new.txt", data=EXTERNAL_ENTITY.replace(
        "propertyupdate", "lockinfo"), headers=XML)
    assert locked.status_code == 400
    assert alice.head(base + "new.txt").status_code == 404
    found = alice.request("PROPFIND", base, data=BILLION_LAUGHS.replace(
        "propertyupdate", "propfind"), headers={**XML, "Depth": "1"})
    assert found.status_code == 400


def test_oversized_xml_body(alice: requests.Session, base: str) -> None:
    body = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/>' + " " * (2 << 20)
    response = alice.request("PROPFIND", base, data=body + "</D:propfind>",
                             headers={**XML, "Depth": "0"})
    assert response.status_code == 413
