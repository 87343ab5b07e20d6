"""Regression tests for issue 8 (hardening), each reproducing a problem first seen on a
running server: unauthenticated writes through the asset share, 500s without a
traceback, file modes after ``init``, out-of-range modification times, names that
break listings or turn into path traversal on restore, the reserved upload folder,
nesting past the depth limit, and locks outliving their user."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
import requests

from tests.provider_http_helpers import LOCK_BODY, XML, lock, multistatus, propfind, raw_request
from tests.server_fixtures import DavServer, _env, create_repository, davbackup


def catalog_rows(server: DavServer, table: str) -> int:
    conn = sqlite3.connect(f"file:{server.repo / 'catalog.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def anonymous(server: DavServer, method: str, path: str, *, headers: dict[str, str] | None = None,
              body: bytes | None = None) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# --- item 2: no writes without credentials through the public asset share ---------------------


@pytest.mark.parametrize("method", ["LOCK", "UNLOCK", "PUT", "DELETE", "MKCOL", "PROPPATCH",
                                    "COPY", "MOVE", "PATCH", "POST"])
def test_asset_share_refuses_writes_without_credentials(server: DavServer, method: str) -> None:
    before = catalog_rows(server, "locks"), catalog_rows(server, "nodes"), catalog_rows(server, "props")
    headers = {**XML, "Destination": f"http://127.0.0.1:{server.port}/:dir_browser/x.css",
               "Lock-Token": "<opaquelocktoken:x>", "Timeout": "Second-3600"}
    body = LOCK_BODY.encode() if method == "LOCK" else b"x"
    for path in ("/:dir_browser/style.css", "/:dir_browser/new-asset.css"):
        status = anonymous(server, method, path, headers=headers, body=body)
        assert status == 405, (method, path, status)  # the assets are read-only for everyone
    after = catalog_rows(server, "locks"), catalog_rows(server, "nodes"), catalog_rows(server, "props")
    assert after == before
    # the assets themselves stay public and readable
    assert requests.get(server.url + "/:dir_browser/style.css").status_code == 200


# --- item 10: every 500 leaves a traceback in the log -----------------------------------------


def test_internal_errors_are_logged_with_traceback(dav_server: DavServer) -> None:
    with dav_server.session("alice") as alice:
        assert alice.request("MKCOL", dav_server.url + "/tampered").status_code == 201
        conn = sqlite3.connect(dav_server.repo / "catalog.sqlite", timeout=30)
        with conn:  # a damaged encrypted name: the listing must fail verification
            conn.execute("UPDATE nodes SET name_enc = CAST(X'00' || substr(name_enc, 2) AS BLOB)"
                         " WHERE parent_id IS NOT NULL")
        conn.close()
        response = propfind(alice, dav_server.url + "/", "1")
        assert response.status_code == 500
        assert "Traceback" not in response.text and "name_enc" not in response.text
    log = dav_server.log()
    assert "Traceback (most recent call last)" in log
    # logged while the request is answered (the access log line may come after the
    # client has its answer): the error line itself names the request
    assert "internal error on PROPFIND / (user alice): IntegrityError" in log


# --- item 11: a new repository is private to its owner ------------------------------------------


def test_init_into_existing_empty_directory_is_private(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir(mode=0o755)
    os.chmod(repo, 0o755)
    env = _env(tmp_path)
    create_repository(repo, env, {"alice": ("alice-password", "rw")})

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(repo) == 0o700
    assert mode(repo / "keys") == 0o700
    assert mode(repo / "packs") == 0o700
    for path in [repo / "catalog.sqlite", *sorted((repo / "keys").iterdir())]:
        assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


def test_new_pack_folders_are_private(tmp_path: Path) -> None:
    from davbackup.repository import Repository

    with Repository.init(tmp_path / "r", "a passphrase for a test") as repo:
        repo.users.add("alice", "alice-password")
        ns = repo.namespace("alice")
        pending = ns.open_write("/f.bin")
        pending.write(os.urandom(300_000))
        pending.commit()
        folders = [p for p in (tmp_path / "r" / "packs").iterdir() if p.is_dir()]
        assert folders
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in folders)


# --- item 12: X-OC-Mtime out of range is a 400 with nothing stored --------------------------------


@pytest.mark.parametrize("value", ["1000000000000000", "9" * 400, "253402300800"])
def test_out_of_range_mtime_refused_without_effect(alice: requests.Session, base: str,
                                                   value: str) -> None:
    put = alice.put(base + "f.txt", data=b"data", headers={"X-OC-Mtime": value})
    assert put.status_code == 400
    assert alice.head(base + "f.txt").status_code == 404
    made = alice.request("MKCOL", base + "d", headers={"X-OC-Mtime": value})
    assert made.status_code == 400
    assert alice.head(base + "d").status_code == 404
    assert propfind(alice, base, "1").status_code == 207


def test_in_range_mtime_is_kept(alice: requests.Session, base: str) -> None:
    assert alice.put(base + "f.txt", data=b"d", headers={"X-OC-Mtime": "1700000000"}).status_code == 201
    assert alice.head(base + "f.txt").headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert alice.get(base).status_code == 200


def test_out_of_range_lastmodified_proppatch_refused(alice: requests.Session, base: str) -> None:
    alice.put(base + "f.txt", data=b"d")
    body = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
            '<D:getlastmodified>Fri, 01 Jan 10000 00:00:00 GMT</D:getlastmodified>'
            '</D:prop></D:set></D:propertyupdate>')
    before = alice.get(base + "f.txt").headers["Last-Modified"]
    response = alice.request("PROPPATCH", base + "f.txt", data=body, headers=XML)
    (element,) = multistatus(response).values()  # 207: the property is refused, not the request
    statuses = [(p.findtext("{DAV:}status"), [c.tag for c in p.find("{DAV:}prop")])
                for p in element.iter("{DAV:}propstat")]
    assert statuses == [("HTTP/1.1 403 Forbidden", ["{DAV:}getlastmodified"])]
    after = alice.get(base + "f.txt")
    assert (after.status_code, after.headers["Last-Modified"]) == (200, before)
    assert propfind(alice, base, "1").status_code == 207


# --- items 13, 19: names that break listings or turn into traversal on restore -------------------


@pytest.mark.parametrize("name", ["bad%EF%BF%BE.txt", "bad%EF%BF%BF.txt", "bad%EF%B7%90.txt",
                                  "bad%F0%9F%BF%BE.txt", "..%5C..%5Cx.txt", "a%5C.%5Cb",
                                  "%2e%2e%2fx.txt", "a%2Fb", "a%2fb"])
def test_bad_names_refused(server: DavServer, alice: requests.Session, base: str,
                           name: str) -> None:
    prefix = base[len(server.url):]
    for method in ("PUT", "MKCOL"):
        status, _ = raw_request(server, method, prefix + name,
                                body=b"x" if method == "PUT" else None)
        assert status == 400, (method, name, status)
    alice.put(base + "ok.txt", data=b"x")
    for method in ("COPY", "MOVE"):
        status, _ = raw_request(server, method, prefix + "ok.txt",
                                headers={"Destination": server.url + prefix + name})
        assert status == 400, (method, name, status)
    listing = multistatus(propfind(alice, base, "1"))
    assert sorted(listing) == sorted([prefix, prefix + "ok.txt"])


def test_backslash_names_without_dots_are_fine(server: DavServer, alice: requests.Session,
                                               base: str) -> None:
    prefix = base[len(server.url):]
    status, _ = raw_request(server, "PUT", prefix + "a%5Cb.txt", body=b"x")
    assert status == 201
    assert alice.get(base + "a%5Cb.txt").content == b"x"


# --- item 15: the reserved upload folder cannot be made by COPY/MOVE --------------------------------


@pytest.mark.parametrize("destination", ["/.well-known//davbackup-uploads",
                                         "//.well-known/davbackup-uploads",
                                         "/.well-known//davbackup-uploads/",
                                         "/.well-known/./davbackup-uploads",
                                         "/.well-known//davbackup-uploads//x"])
@pytest.mark.parametrize("method", ["COPY", "MOVE"])
def test_reserved_folder_not_creatable(server: DavServer, method: str, destination: str) -> None:
    with server.session("bob") as bob:
        bob.request("MKCOL", server.url + "/.well-known")
        bob.request("MKCOL", server.url + "/src")
        response = bob.request(method, server.url + "/src",
                               headers={"Destination": server.url + destination})
        assert response.status_code == 403, response.status_code
        listing = multistatus(propfind(bob, server.url + "/.well-known", "1"))
        assert list(listing) == ["/.well-known/"]
        assert bob.request("MKCOL", server.url + "/.well-known//davbackup-uploads").status_code == 403


# --- item 16: no nesting past the depth limit ------------------------------------------------------


def test_move_and_copy_past_depth_limit_refused(alice: requests.Session, base: str) -> None:
    chain = base + "c"
    url = chain
    assert alice.request("MKCOL", url).status_code == 201
    for _ in range(129):
        url += "/c"
        assert alice.request("MKCOL", url).status_code == 201
    alice.put(url + "/leaf.txt", data=b"leaf")
    assert alice.request("COPY", chain, headers={"Destination": base + "twin"}).status_code == 201
    for method in ("MOVE", "COPY"):
        response = alice.request(method, base + "twin", headers={"Destination": url + "/twin"})
        assert response.status_code == 400, response.status_code
    assert alice.head(url + "/twin").status_code == 404
    assert alice.get(base + "twin" + "/c" * 129 + "/leaf.txt").content == b"leaf"
    # a move that stays within the limit works
    shallow = base + "twin" + "/c" * 120
    assert alice.request("MOVE", shallow, headers={"Destination": base + "short"}).status_code == 201
    assert alice.get(base + "short" + "/c" * 9 + "/leaf.txt").content == b"leaf"


# --- item 17: a removed user's locks go with the user ------------------------------------------------


def test_removed_users_locks_do_not_bind_a_new_user_of_that_name(dav_server: DavServer) -> None:
    url = dav_server.url + "/shared-name.txt"
    with dav_server.session("bob") as bob:
        assert bob.put(url, data=b"old bob").status_code == 201
        assert lock(bob, url).status_code == 200
    assert catalog_rows(dav_server, "locks") == 1
    env, repo = dav_server.env, str(dav_server.repo)
    davbackup(["user", "remove", "bob", "--repo", repo], env, stdin="bob\n")
    assert catalog_rows(dav_server, "locks") == 0
    davbackup(["user", "add", "bob", "--repo", repo], env, stdin="new-bob-password\n")
    dav_server.users["bob"] = ("new-bob-password", "rw")
    with dav_server.session("bob") as bob:  # the running server
        assert bob.put(url, data=b"new bob").status_code == 201
        assert propfind(bob, url, "0").status_code == 207
    dav_server.restart()
    with dav_server.session("bob") as bob:
        assert bob.put(url, data=b"new bob again").status_code == 204


# --- found by the fuzzer: a GET of a folder with a body -----------------------------------------


def test_get_of_folder_with_body_is_415(alice: requests.Session, base: str) -> None:
    for method in ("GET", "HEAD"):
        response = alice.request(method, base, data=b"data")
        assert response.status_code == 415, (method, response.status_code)
    assert alice.get(base).status_code == 200
