"""The WebDAV server over real HTTP: `davbackup serve` on loopback, driven by requests.

Every test works below a collection of its own on the module's shared server;
tests that restart the server, or change its settings, get a server of their own.
Security (isolation, authentication, hostile input) is in test_provider_security.py.
"""

from __future__ import annotations

import os
import time
from email.utils import formatdate
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests
from lxml import etree

from tests.provider_http_helpers import (
    DAV,
    XML,
    dead_prop,
    lock,
    lock_token,
    multistatus,
    prop_value,
    propfind,
    proppatch,
    send_truncated,
)
from tests.server_fixtures import DavServer

# --- GET / HEAD / PUT -------------------------------------------------------------------


def test_put_get_head_round_trip(alice: requests.Session, base: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    put = alice.put(base + "photo.jpg", data=data)
    assert put.status_code == 201
    etag = put.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")

    get = alice.get(base + "photo.jpg")
    assert get.status_code == 200
    assert get.content == data
    assert get.headers["ETag"] == etag
    assert get.headers["Content-Type"] == "image/jpeg"
    assert get.headers["Accept-Ranges"] == "bytes"
    assert "Last-Modified" in get.headers

    head = alice.head(base + "photo.jpg")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["ETag"] == etag
    assert head.content == b""


def test_put_overwrite_is_204_with_new_etag(alice: requests.Session, base: str) -> None:
    first = alice.put(base + "a.txt", data=b"one")
    second = alice.put(base + "a.txt", data=b"two!")
    assert (first.status_code, second.status_code) == (201, 204)
    assert first.headers["ETag"] != second.headers["ETag"]
    assert alice.get(base + "a.txt").content == b"two!"


def test_put_empty_file(alice: requests.Session, base: str) -> None:
    assert alice.put(base + "empty", data=b"").status_code == 201
    get = alice.get(base + "empty")
    assert get.status_code == 200 and get.content == b""


def test_ranges(alice: requests.Session, base: str) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB: ranges cross chunk boundaries
    alice.put(base + "r.bin", data=data)
    cases = {"bytes=0-9": data[0:10], "bytes=-5": data[-5:],
             "bytes=1048570-1048590": data[1048570:1048591],
             f"bytes={len(data) - 3}-": data[-3:]}
    for spec, expected in cases.items():
        got = alice.get(base + "r.bin", headers={"Range": spec})
        assert got.status_code == 206, spec
        assert got.content == expected, spec
        assert got.headers["Content-Range"].endswith(f"/{len(data)}")
    bad = alice.get(base + "r.bin", headers={"Range": f"bytes={len(data) + 10}-"})
    assert bad.status_code == 416
    assert bad.headers.get("Content-Range") in (None, f"bytes */{len(data)}")


@pytest.mark.parametrize("spec", ["bytes=5-3", "bytes=1-2-3", "items=0-4", "bytes=0-1,4-5"])
def test_unusable_ranges_send_whole_file(alice: requests.Session, base: str, spec: str) -> None:
    alice.put(base + "w.bin", data=b"0123456789")
    got = alice.get(base + "w.bin", headers={"Range": spec})
    assert (got.status_code, got.content) == (200, b"0123456789")
    assert "Content-Range" not in got.headers


def test_if_range(alice: requests.Session, base: str) -> None:
    etag = alice.put(base + "f", data=b"0123456789").headers["ETag"]
    same = alice.get(base + "f", headers={"Range": "bytes=0-1", "If-Range": etag})
    assert (same.status_code, same.content) == (206, b"01")
    other = alice.get(base + "f", headers={"Range": "bytes=0-1", "If-Range": '"nope"'})
    assert (other.status_code, other.content) == (200, b"0123456789")


def test_conditional_requests(alice: requests.Session, base: str) -> None:
    etag = alice.put(base + "c.txt", data=b"v1").headers["ETag"]
    assert alice.get(base + "c.txt", headers={"If-None-Match": etag}).status_code == 304
    assert alice.get(base + "c.txt", headers={"If-None-Match": '"x"'}).status_code == 200
    later = formatdate(time.time() + 3600, usegmt=True)
    assert alice.get(base + "c.txt", headers={"If-Modified-Since": later}).status_code == 304
    stamp = alice.head(base + "c.txt").headers["Last-Modified"]
    assert alice.get(base + "c.txt", headers={"If-Modified-Since": stamp}).status_code == 304
    earlier = formatdate(time.time() - 3600, usegmt=True)
    assert alice.get(base + "c.txt", headers={"If-Modified-Since": earlier}).status_code == 200
    # If-Modified-Since means nothing to other methods
    put = alice.put(base + "c.txt", data=b"v1", headers={"If-Modified-Since": later})
    assert put.status_code == 204
    etag = alice.head(base + "c.txt").headers["ETag"]
    # lost update protection
    assert alice.put(base + "c.txt", data=b"v2", headers={"If-Match": '"stale"'}).status_code == 412
    assert alice.put(base + "c.txt", data=b"v2", headers={"If-None-Match": "*"}).status_code == 412
    assert alice.put(base + "c.txt", data=b"v2", headers={"If-Match": etag}).status_code == 204
    assert alice.get(base + "c.txt").content == b"v2"
    # If-Match on a resource that does not exist
    assert alice.put(base + "new.txt", data=b"x", headers={"If-Match": "*"}).status_code == 412
    assert alice.head(base + "new.txt").status_code == 404
    assert alice.put(base + "new.txt", data=b"x", headers={"If-None-Match": "*"}).status_code == 201


def test_content_type_by_extension(alice: requests.Session, base: str) -> None:
    for name, ctype in {"a.html": "text/html", "b.pdf": "application/pdf",
                        "c.unknownext": "application/octet-stream"}.items():
        alice.put(base + name, data=b"x")
        assert alice.head(base + name).headers["Content-Type"].startswith(ctype)


def test_put_to_missing_parent_or_collection(alice: requests.Session, base: str) -> None:
    assert alice.put(base + "no/such/dir.txt", data=b"x").status_code == 409
    alice.request("MKCOL", base + "dir")
    assert alice.put(base + "dir", data=b"x").status_code == 405


def test_chunked_put(alice: requests.Session, base: str) -> None:
    parts = [os.urandom(100_000) for _ in range(7)]
    response = alice.put(base + "chunked.bin", data=iter(parts))
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 201
    assert alice.get(base + "chunked.bin").content == b"".join(parts)


def test_x_oc_mtime(alice: requests.Session, base: str) -> None:
    alice.put(base + "m.txt", data=b"x", headers={"X-OC-Mtime": "1000000000"})
    assert alice.head(base + "m.txt").headers["Last-Modified"] == "Sun, 09 Sep 2001 01:46:40 GMT"


# --- short bodies -------------------------------------------------------------------------


def test_short_body_keeps_old_version(server: DavServer, alice: requests.Session,
                                      base: str) -> None:
    path = urlsplit(base).path + "keep.bin"
    old = os.urandom(5000)
    etag = alice.put(server.url + path, data=old).headers["ETag"]
    status = send_truncated(server, path, {"Content-Length": "100000"}, os.urandom(40_000))
    assert status == 400
    get = alice.get(server.url + path)
    assert get.content == old and get.headers["ETag"] == etag


def test_short_body_of_new_file_leaves_nothing(server: DavServer, alice: requests.Session,
                                              base: str) -> None:
    path = urlsplit(base).path + "never.bin"
    assert send_truncated(server, path, {"Content-Length": "5000"}, b"x" * 10) == 400
    assert alice.head(server.url + path).status_code == 404
    names = multistatus(propfind(alice, base, "1"))
    assert not any(href.endswith("never.bin") for href in names)


def test_chunked_body_short_of_expected_entity_length(server: DavServer,
                                                      alice: requests.Session,
                                                      base: str) -> None:
    """macOS Finder: chunked body plus X-Expected-Entity-Length."""
    path = urlsplit(base).path + "finder.bin"
    body = b"400\r\n" + b"y" * 0x400 + b"\r\n0\r\n\r\n"
    status = send_truncated(server, path, {"Transfer-Encoding": "chunked",
                                           "X-Expected-Entity-Length": "4096"}, body)
    assert status == 400
    assert alice.head(server.url + path).status_code == 404
    # the same with the right length is stored
    status = send_truncated(server, path, {"Transfer-Encoding": "chunked",
                                           "X-Expected-Entity-Length": "1024"}, body)
    assert status == 201
    assert alice.get(server.url + path).content == b"y" * 1024


def test_early_answer_to_chunked_body_closes_connection(server: DavServer) -> None:
    """An answer sent before a chunked body was read must end the connection, or the
    rest of the body would be taken for the next request."""
    with server.session("reader") as reader:
        refused = reader.put(server.url + "/ro-chunked", data=iter([b"a" * 1000] * 5))
        assert refused.status_code == 403
        assert refused.headers.get("Connection", "").lower() == "close"
        assert reader.head(server.url + "/").status_code == 200


def test_broken_chunked_encoding(server: DavServer, alice: requests.Session, base: str) -> None:
    path = urlsplit(base).path + "broken.bin"
    status = send_truncated(server, path, {"Transfer-Encoding": "chunked"}, b"10\r\nabc")
    assert status == 400
    assert alice.head(server.url + path).status_code == 404


# --- collections: MKCOL, DELETE, COPY, MOVE ----------------------------------------------------


def test_head_and_get_on_collection(server: DavServer, alice: requests.Session,
                                    base: str) -> None:
    alice.put(base + "listed.txt", data=b"x")
    assert alice.head(base).status_code == 200
    assert alice.head(base.rstrip("/")).status_code == 200
    page = alice.get(base)
    assert page.status_code == 200 and "listed.txt" in page.text
    assert "text/html" in page.headers["Content-Type"]
    redirect = alice.get(base.rstrip("/"), allow_redirects=False)
    assert redirect.status_code == 301
    mount = alice.get(base + "?davmount")
    assert mount.status_code == 200 and "dm:mount" in mount.text


def test_dir_browser_assets_reachable(server: DavServer) -> None:
    for asset in ("style.css", "logo.svg"):  # provider/templates
        assert requests.get(f"{server.url}/:dir_browser/{asset}").status_code == 200
    assert requests.get(server.url + "/").status_code == 401  # listings need a login


def test_mkcol(alice: requests.Session, base: str) -> None:
    assert alice.request("MKCOL", base + "d").status_code == 201
    assert alice.request("MKCOL", base + "d").status_code == 405
    assert alice.request("MKCOL", base + "missing/d").status_code == 409
    alice.put(base + "file", data=b"x")
    assert alice.request("MKCOL", base + "file").status_code == 405
    assert alice.request("MKCOL", base + "e", data=b"<x/>").status_code == 415


def test_delete(alice: requests.Session, base: str) -> None:
    alice.request("MKCOL", base + "d")
    alice.request("MKCOL", base + "d/sub")
    alice.put(base + "d/sub/f.txt", data=b"x")
    assert alice.delete(base + "d").status_code == 204
    assert alice.head(base + "d/sub/f.txt").status_code == 404
    assert alice.delete(base + "d").status_code == 404
    alice.put(base + "f", data=b"x")
    assert alice.delete(base + "f").status_code == 204


def test_copy_statuses(alice: requests.Session, base: str) -> None:
    alice.put(base + "src.txt", data=b"source")
    alice.put(base + "other.txt", data=b"other")
    copy = alice.request("COPY", base + "src.txt", headers={"Destination": base + "dst.txt"})
    assert copy.status_code == 201
    again = alice.request("COPY", base + "src.txt", headers={"Destination": base + "dst.txt"})
    assert again.status_code == 204
    refused = alice.request("COPY", base + "src.txt",
                            headers={"Destination": base + "other.txt", "Overwrite": "F"})
    assert refused.status_code == 412
    assert alice.get(base + "other.txt").content == b"other"
    nowhere = alice.request("COPY", base + "src.txt", headers={"Destination": base + "no/x"})
    assert nowhere.status_code == 409
    onto_self = alice.request("COPY", base + "src.txt", headers={"Destination": base + "src.txt"})
    assert onto_self.status_code == 403
    assert alice.get(base + "dst.txt").content == b"source"
    # the copy is independent of its source
    alice.put(base + "src.txt", data=b"changed")
    assert alice.get(base + "dst.txt").content == b"source"


def test_copy_collection_depths(alice: requests.Session, base: str) -> None:
    alice.request("MKCOL", base + "tree")
    alice.put(base + "tree/a.txt", data=b"a")
    assert alice.request("COPY", base + "tree", headers={
        "Destination": base + "deep", "Depth": "infinity"}).status_code == 201
    assert alice.get(base + "deep/a.txt").content == b"a"
    assert alice.request("COPY", base + "tree", headers={
        "Destination": base + "shallow", "Depth": "0"}).status_code == 201
    assert alice.head(base + "shallow").status_code == 200
    assert alice.head(base + "shallow/a.txt").status_code == 404


def test_webdavclient3_depths(alice: requests.Session, base: str) -> None:
    """webdavclient3 sends Depth: 1 with COPY of a folder and with every PROPPATCH."""
    alice.request("MKCOL", base + "tree")
    alice.put(base + "tree/a.txt", data=b"a")
    copied = alice.request("COPY", base + "tree", headers={"Destination": base + "copy",
                                                          "Depth": "1"})
    assert copied.status_code == 201
    assert alice.get(base + "copy/a.txt").content == b"a"
    body = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
            '<x:k xmlns:x="urn:test">v</x:k></D:prop></D:set></D:propertyupdate>')
    patched = alice.request("PROPPATCH", base + "tree/a.txt", data=body,
                            headers={**XML, "Depth": "1"})
    assert patched.status_code == 207
    assert dead_prop(alice, base + "tree/a.txt", "k") == "v"


def test_proppatch_lastmodified(alice: requests.Session, base: str) -> None:
    """rclone (ownCloud conventions) sets the modification time by PROPPATCH."""
    alice.put(base + "t.txt", data=b"x")
    response = proppatch(alice, base + "t.txt", "getlastmodified",
                         "Sun, 09 Sep 2001 01:46:40 GMT", ns="DAV:")
    assert response.status_code == 207 and b"200 OK" in response.content
    assert alice.head(base + "t.txt").headers["Last-Modified"] == "Sun, 09 Sep 2001 01:46:40 GMT"


def test_move_statuses(alice: requests.Session, base: str) -> None:
    alice.request("MKCOL", base + "dir")
    alice.put(base + "dir/f.txt", data=b"f")
    assert alice.request("MOVE", base + "dir", headers={
        "Destination": base + "moved"}).status_code == 201
    assert alice.head(base + "dir").status_code == 404
    assert alice.get(base + "moved/f.txt").content == b"f"
    alice.put(base + "x.txt", data=b"x")
    alice.put(base + "y.txt", data=b"y")
    assert alice.request("MOVE", base + "x.txt", headers={
        "Destination": base + "y.txt", "Overwrite": "F"}).status_code == 412
    assert alice.request("MOVE", base + "x.txt", headers={
        "Destination": base + "y.txt"}).status_code == 204
    assert alice.get(base + "y.txt").content == b"x"
    assert alice.head(base + "x.txt").status_code == 404
    below = alice.request("MOVE", base + "moved", headers={"Destination": base + "moved/inner"})
    assert below.status_code == 403


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
@pytest.mark.parametrize("raw", [False, True], ids=["encoded", "as-davfs2-sends-it"])
def test_destination_names_with_semicolon_and_question_mark(alice: requests.Session, base: str,
                                                            method: str, raw: bool) -> None:
    """WsgiDAV decodes the Destination and then splits it with ``urlparse``: a MOVE to
    ``a;b.txt`` made ``a`` and one to ``what?.txt`` made ``what``. davfs2 sends ``;`` as it
    is; ``?`` always comes encoded."""
    names = ["a;b.txt.locked", "what?.txt", "x;y", "a b&c#d%e+f;g=h@i'(j)[k].txt"]
    for i, name in enumerate(names):
        alice.put(base + f"src{i}.txt", data=name.encode())
        target = quote(name, safe=";" if raw else "")
        response = alice.request(method, base + f"src{i}.txt", headers={"Destination": base + target})
        assert response.status_code == 201, (name, response.status_code, response.text)
        assert alice.get(base + quote(name)).content == name.encode()
    listed = {href.rsplit("/", 1)[-1] for href in multistatus(propfind(alice, base)) if href != urlsplit(base).path}
    sources = {f"src{i}.txt" for i in range(len(names))} if method == "COPY" else set()
    assert listed == set(names) | sources
    # a folder's new name keeps its ';' too, and its members go with it
    alice.request("MKCOL", base + "dir")
    alice.put(base + "dir/in.txt", data=b"in")
    moved = alice.request(method, base + "dir", headers={"Destination": base + quote("d;1", safe=";")})
    assert moved.status_code == 201
    assert alice.get(base + "d%3B1/in.txt").content == b"in"


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
def test_destination_containing_source_refused(alice: requests.Session, base: str,
                                               method: str) -> None:
    """Overwriting an ancestor of the source would delete the source with it."""
    alice.request("MKCOL", base + "outer")
    alice.request("MKCOL", base + "outer/inner")
    alice.put(base + "outer/inner/f.txt", data=b"keep me")
    response = alice.request(method, base + "outer/inner", headers={"Destination": base + "outer"})
    assert response.status_code == 403
    assert alice.get(base + "outer/inner/f.txt").content == b"keep me"


# --- PROPFIND / PROPPATCH ------------------------------------------------------------------------


def test_propfind_depths(alice: requests.Session, base: str) -> None:
    alice.request("MKCOL", base + "sub")
    alice.put(base + "sub/deep.txt", data=b"d")
    alice.put(base + "file.txt", data=b"12345")
    base_path = urlsplit(base).path
    zero = multistatus(propfind(alice, base, "0"))
    assert list(zero) == [base_path]
    one = multistatus(propfind(alice, base, "1"))
    assert set(one) == {base_path, base_path + "sub/", base_path + "file.txt"}
    file_el = one[base_path + "file.txt"]
    assert prop_value(file_el, f"{DAV}getcontentlength").text == "5"
    assert prop_value(one[base_path + "sub/"], f"{DAV}resourcetype").find(
        f"{DAV}collection") is not None
    assert prop_value(file_el, f"{DAV}getetag") is not None


@pytest.mark.parametrize("depth", ["infinity", None])
def test_propfind_infinity_refused(alice: requests.Session, base: str,
                                   depth: str | None) -> None:
    response = propfind(alice, base, depth)
    assert response.status_code == 403
    assert b"propfind-finite-depth" in response.content


def test_dead_properties(alice: requests.Session, base: str) -> None:
    alice.put(base + "p.txt", data=b"x")
    assert proppatch(alice, base + "p.txt", "color", "blue").status_code == 207
    assert dead_prop(alice, base + "p.txt", "color") == "blue"
    assert proppatch(alice, base + "p.txt", "color", "green").status_code == 207
    assert dead_prop(alice, base + "p.txt", "color") == "green"
    # they follow MOVE and COPY
    alice.request("MOVE", base + "p.txt", headers={"Destination": base + "q.txt"})
    assert dead_prop(alice, base + "q.txt", "color") == "green"
    alice.request("COPY", base + "q.txt", headers={"Destination": base + "r.txt"})
    assert dead_prop(alice, base + "r.txt", "color") == "green"
    # and are gone with DELETE
    alice.delete(base + "q.txt")
    alice.put(base + "q.txt", data=b"again")
    assert dead_prop(alice, base + "q.txt", "color") is None
    assert proppatch(alice, base + "r.txt", "color", None).status_code == 207
    assert dead_prop(alice, base + "r.txt", "color") is None


def test_protected_live_property(alice: requests.Session, base: str) -> None:
    alice.put(base + "p.txt", data=b"x")
    response = proppatch(alice, base + "p.txt", "getetag", "x", ns="DAV:")
    assert response.status_code == 207
    assert b"403" in response.content


def test_windows_properties_accepted(alice: requests.Session, base: str) -> None:
    alice.put(base + "w.txt", data=b"x")
    response = proppatch(alice, base + "w.txt", "Win32FileAttributes", "00000020",
                         ns="urn:schemas-microsoft-com:")
    assert response.status_code == 207 and b"200 OK" in response.content


# --- locks -------------------------------------------------------------------------------------


def test_lock_and_unlock(alice: requests.Session, base: str) -> None:
    alice.put(base + "l.txt", data=b"x")
    locked = lock(alice, base + "l.txt")
    assert locked.status_code == 200
    token = lock_token(locked)
    assert alice.put(base + "l.txt", data=b"y").status_code == 423
    assert alice.delete(base + "l.txt").status_code == 423
    assert alice.put(base + "l.txt", data=b"y", headers={"If": f"(<{token}>)"}).status_code == 204
    unlock = alice.request("UNLOCK", base + "l.txt", headers={"Lock-Token": f"<{token}>"})
    assert unlock.status_code == 204
    assert alice.put(base + "l.txt", data=b"z").status_code == 204


def test_lock_on_unmapped_url_creates_empty_file(alice: requests.Session, base: str) -> None:
    locked = lock(alice, base + "new.txt")
    assert locked.status_code == 201
    head = alice.head(base + "new.txt")
    assert head.status_code == 200 and head.headers["Content-Length"] == "0"


def test_lock_hrefs_are_client_urls(server: DavServer, alice: requests.Session,
                                    base: str) -> None:
    """Lock keys carry the user internally; clients must only see their own URLs."""
    base_path = urlsplit(base).path
    alice.request("MKCOL", base + "c")
    token = lock_token(lock(alice, base + "c", depth="infinity"))
    discovered = multistatus(propfind(alice, base + "c", "0"))
    root_el = prop_value(discovered[base_path + "c/"], f"{DAV}lockdiscovery")
    assert unquote(root_el.findtext(f".//{DAV}lockroot/{DAV}href")) == base_path + "c/"
    conflict = alice.put(base + "c/f.txt", data=b"x")
    assert conflict.status_code == 423
    hrefs = [unquote(h.text) for h in etree.fromstring(conflict.content).iter(f"{DAV}href")]
    assert hrefs == [base_path + "c"]
    assert "alice" not in conflict.text
    alice.request("UNLOCK", base + "c", headers={"Lock-Token": f"<{token}>"})


def test_delete_of_collection_with_locked_member(alice: requests.Session, base: str) -> None:
    alice.request("MKCOL", base + "d")
    alice.put(base + "d/f.txt", data=b"x")
    token = lock_token(lock(alice, base + "d/f.txt"))
    assert alice.delete(base + "d").status_code == 423
    assert alice.head(base + "d/f.txt").status_code == 200
    deleted = alice.delete(base + "d", headers={"If": f"<{base}d/f.txt> (<{token}>)"})
    assert deleted.status_code == 204
    # the lock went with the file: a new file at the same path is not locked
    assert alice.put(base + "d", data=b"x").status_code == 201


def test_moved_resource_leaves_its_lock_behind(alice: requests.Session, base: str) -> None:
    alice.put(base + "a.txt", data=b"x")
    token = lock_token(lock(alice, base + "a.txt"))
    moved = alice.request("MOVE", base + "a.txt", headers={
        "Destination": base + "b.txt", "If": f"(<{token}>)"})
    assert moved.status_code == 201
    assert alice.put(base + "b.txt", data=b"y").status_code == 204
    assert alice.put(base + "a.txt", data=b"y").status_code == 201


def test_locks_survive_restart(dav_server: DavServer) -> None:
    url = dav_server.url + "/locked.txt"
    with dav_server.session() as alice:
        alice.put(url, data=b"x")
        token = lock_token(lock(alice, url))
    dav_server.restart()
    with dav_server.session() as alice:
        assert alice.put(url, data=b"y").status_code == 423
        assert alice.put(url, data=b"y", headers={"If": f"(<{token}>)"}).status_code == 204
        assert alice.request("UNLOCK", url, headers={"Lock-Token": f"<{token}>"}).status_code == 204
        assert alice.put(url, data=b"z").status_code == 204


def test_crash_keeps_committed_files_and_locks(dav_server: DavServer) -> None:
    with dav_server.session() as alice:
        alice.put(dav_server.url + "/kept.txt", data=b"committed")
        token = lock_token(lock(alice, dav_server.url + "/kept.txt"))
    dav_server.restart(crash=True)
    with dav_server.session() as alice:
        assert alice.get(dav_server.url + "/kept.txt").content == b"committed"
        assert alice.put(dav_server.url + "/kept.txt", data=b"x").status_code == 423
        assert alice.request("UNLOCK", dav_server.url + "/kept.txt",
                             headers={"Lock-Token": f"<{token}>"}).status_code == 204


# --- names -----------------------------------------------------------------------------------


def test_non_ascii_names(alice: requests.Session, base: str) -> None:
    folder, name = "Ünïcödé ☃", "файл 日本語 €.txt"
    assert alice.request("MKCOL", base + quote(folder)).status_code == 201
    url = base + quote(folder) + "/" + quote(name)
    assert alice.put(url, data="inhalt".encode()).status_code == 201
    listing = multistatus(propfind(alice, base + quote(folder), "1"))
    assert urlsplit(base).path + folder + "/" + name in listing
    assert alice.get(url).content == "inhalt".encode()
    moved = alice.request("MOVE", url, headers={"Destination": base + quote("ß ✓.txt")})
    assert moved.status_code == 201
    assert alice.get(base + quote("ß ✓.txt")).content == "inhalt".encode()


# --- protocol details -------------------------------------------------------------------------


def test_options(server: DavServer, alice: requests.Session) -> None:
    response = alice.options(server.url + "/")
    assert response.status_code == 200
    assert response.headers["DAV"].startswith("1, 2")
    assert "PROPFIND" in response.headers["Allow"]


def test_access_log_line(server: DavServer, alice: requests.Session, base: str) -> None:
    alice.put(base + "logged.txt", data=b"12345")
    alice.get(base + "logged.txt")
    deadline = time.monotonic() + 5
    path = urlsplit(base).path + "logged.txt"
    while time.monotonic() < deadline:
        log = server.log()
        if f"alice GET {path} 200 5B" in log:
            break
        time.sleep(0.1)
    assert f"alice PUT {path} 201" in log
    assert f"alice GET {path} 200 5B" in log
