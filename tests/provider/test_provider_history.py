"""/.history/ and /.versions/ over real HTTP: browsing, read-only, restore by COPY, quotas."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from urllib.parse import quote

import requests

from tests.provider_http_helpers import DAV, XML, dead_prop, lock, multistatus, prop_value, propfind, proppatch
from tests.server_fixtures import DavServer, launch


def moment(offset: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset, timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")


def next_second() -> None:
    """Let the clock pass into a new second (changes within one second coalesce)."""
    time.sleep(1.05 - (time.time() % 1.0))


def rel(base: str, server: DavServer) -> str:
    return base[len(server.url):]


def test_point_in_time_browse_read_and_restore(server: DavServer, alice: requests.Session, base: str) -> None:
    folder = rel(base, server)
    for _attempt in range(5):  # the first version's properties are those of its own second:
        next_second()  # the PUT and the PROPPATCH must fall in one (a loaded machine may split them)
        second = int(time.time())
        assert alice.put(base + "a.txt", data=b"precious").status_code in (201, 204)
        assert proppatch(alice, base + "a.txt", "tag", "one").status_code == 207
        if int(time.time()) == second:
            break
    assert alice.request("MKCOL", base + "sub/").status_code == 201
    assert alice.put(base + "sub/b.txt", data=b"also precious").status_code == 201
    etag = alice.head(base + "a.txt").headers["ETag"]
    next_second()
    before = moment()
    next_second()
    assert alice.put(base + "a.txt", data=b"encrypted!").status_code == 204
    assert alice.request("MOVE", base + "sub/b.txt",
                         headers={"Destination": base + "sub/b.txt.locked"}).status_code == 201
    assert alice.delete(base + "sub/").status_code == 204
    old = f"{server.url}/.history/{before}{folder}"
    got = alice.get(old + "a.txt")
    assert got.status_code == 200 and got.content == b"precious"
    assert got.headers["ETag"] == etag
    assert alice.get(old + "sub/b.txt").content == b"also precious"
    assert alice.get(old + "a.txt", headers={"Range": "bytes=2-4"}).content == b"eci"
    assert dead_prop(alice, old + "a.txt", "tag") == "one"
    listing = multistatus(propfind(alice, old))
    assert {h.rstrip("/").rsplit("/", 1)[-1] for h in listing} >= {"a.txt", "sub"}
    # a Depth 1 listing reads its members' properties at once: the same values
    (a_txt,) = [el for h, el in listing.items() if h.endswith("/a.txt")]
    tag = prop_value(a_txt, "{urn:test}tag")
    assert tag is not None and tag.text == "one"
    versions_listing = multistatus(propfind(alice, f"{server.url}/.versions{folder}a.txt/"))
    assert [prop_value(el, "{urn:test}tag").text for h, el in versions_listing.items()  # type: ignore[union-attr]
            if h.endswith(".txt")] == ["one", "one"]  # the tag stayed when the content changed
    # /.history/ lists the retained points in time; a point in time is a folder
    points = multistatus(propfind(alice, f"{server.url}/.history/"))
    assert any(h.rstrip("/").endswith(before) or h.endswith("Z/") for h in points)
    # restore the whole folder with one COPY: a new version, the bad state kept
    next_second()
    restored = alice.request("COPY", old, headers={"Destination": base, "Overwrite": "T"})
    assert restored.status_code == 204, restored.text
    assert alice.get(base + "a.txt").content == b"precious"
    assert alice.get(base + "sub/b.txt").content == b"also precious"
    assert dead_prop(alice, base + "a.txt", "tag") == "one"
    next_second()
    versions = multistatus(propfind(alice, f"{server.url}/.versions{folder}a.txt/"))
    names = sorted(h.rsplit("/", 1)[-1] for h in versions if h.endswith(".txt"))
    assert len(names) == 3 and all(n.endswith("Z.txt") for n in names)
    bodies = [alice.get(f"{server.url}/.versions{folder}a.txt/{n}").content for n in names]
    assert bodies == [b"precious", b"encrypted!", b"precious"]


def test_history_is_read_only(server: DavServer, alice: requests.Session, base: str) -> None:
    folder = rel(base, server)
    assert alice.put(base + "f.txt", data=b"x").status_code == 201
    next_second()
    point = f"{server.url}/.history/{moment()}{folder}"
    version_dir = f"{server.url}/.versions{folder}f.txt/"
    (vname,) = [h.rsplit("/", 1)[-1] for h in multistatus(propfind(alice, version_dir)) if h.endswith(".txt")]
    for url in (point + "f.txt", point + "new.txt", version_dir + vname, f"{server.url}/.history/x.txt"):
        assert alice.put(url, data=b"y").status_code == 403, url
        assert alice.delete(url).status_code == 403, url
        assert alice.request("MKCOL", url + "d/").status_code == 403, url
        assert lock(alice, url).status_code == 403, url
        assert proppatch(alice, url, "tag", "v").status_code == 403, url
        assert alice.request("MOVE", url, headers={"Destination": base + "moved"}).status_code == 403, url
        assert alice.request("PATCH", url, data=b"z", headers={
            "Content-Type": "application/x-sabredav-partialupdate", "X-Update-Range": "append"}).status_code == 403
    assert alice.request("COPY", base + "f.txt",
                         headers={"Destination": point + "copy.txt"}).status_code == 403
    assert alice.delete(f"{server.url}/.history/").status_code == 403
    assert alice.request("MKCOL", f"{server.url}/.versions/").status_code == 403
    assert alice.get(point + "f.txt").content == b"x"  # nothing changed


def test_reserved_names_hidden_and_not_creatable(server: DavServer, alice: requests.Session, base: str) -> None:
    root = multistatus(propfind(alice, f"{server.url}/"))
    assert not any(".history" in h or ".versions" in h for h in root)
    for name in (".history", ".versions"):
        assert alice.request("MKCOL", f"{server.url}/{name}/").status_code == 403
        assert alice.put(f"{server.url}/{name}", data=b"x").status_code == 403
        assert alice.request("MOVE", base.rstrip("/"), headers={"Destination": f"{server.url}/{name}"}
                             ).status_code == 403
    # reachable by name
    assert propfind(alice, f"{server.url}/.history/", "0").status_code == 207
    assert propfind(alice, f"{server.url}/.versions/", "0").status_code == 207


def test_bad_points_in_time_are_not_found(server: DavServer, alice: requests.Session) -> None:
    for name in ("yesterday", "2026-13-01T000000Z", "2026-12-03T07:30:00Z", quote("2026-12-03T073000Z\u00e9")):
        assert alice.get(f"{server.url}/.history/{name}/").status_code == 404
    assert alice.get(f"{server.url}/.versions/no/such/file.txt/").status_code == 404


def test_other_users_history_is_invisible(server: DavServer, alice: requests.Session, base: str) -> None:
    assert alice.put(base + "secret.txt", data=b"alice only").status_code == 201
    next_second()
    point = f"{server.url}/.history/{moment()}{rel(base, server)}secret.txt"
    assert alice.get(point).content == b"alice only"
    users = [u for u in server.users if u != "alice"]
    for other in users:
        with server.session(other) as session:
            assert session.get(point).status_code == 404


def test_quota_507_and_rfc4331_properties(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = launch(tmp_path / "q")
    try:
        from tests.server_fixtures import davbackup

        davbackup(["user", "quota", "alice", "--repo", str(srv.repo), "--quota", "100K"], srv.env)
        with srv.session() as s:
            body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                    "<D:quota-used-bytes/><D:quota-available-bytes/></D:prop></D:propfind>")
            assert s.put(srv.url + "/a.bin", data=b"a" * 60_000).status_code == 201
            (el,) = multistatus(propfind(s, srv.url + "/", "0", body)).values()
            assert prop_value(el, f"{DAV}quota-used-bytes").text == "60000"
            assert prop_value(el, f"{DAV}quota-available-bytes").text == str(102400 - 60000)
            big = s.put(srv.url + "/b.bin", data=b"b" * 50_000)
            assert big.status_code == 507
            assert s.get(srv.url + "/b.bin").status_code == 404
            # chunked (no length announced): refused at commit, nothing stored
            chunked = s.put(srv.url + "/c.bin", data=iter([b"c" * 25_000, b"c" * 25_000]))
            assert chunked.status_code == 507
            assert s.get(srv.url + "/c.bin").status_code == 404
            assert s.request("COPY", srv.url + "/a.bin", headers={"Destination": srv.url + "/a2.bin"}
                             ).status_code == 507
            assert s.get(srv.url + "/a2.bin").status_code == 404
            next_second()
            assert s.delete(srv.url + "/a.bin").status_code == 204  # deleting makes room...
            assert s.put(srv.url + "/b.bin", data=b"b" * 100_000).status_code == 201
            # ...and history, not counted in the quota, cannot be deleted to make more
            assert s.delete(f"{srv.url}/.history/").status_code == 403
            (el,) = multistatus(propfind(s, srv.url + "/", "0", body)).values()
            assert prop_value(el, f"{DAV}quota-used-bytes").text == "100000"
    finally:
        srv.stop()
