"""PROPFIND's direct path (provider/propfind_direct.py) answers exactly as the generic one.

Two servers run in this process on real sockets over one repository: one with
``webdav.propfind_direct`` off (WsgiDAV's resources and property manager, the
reference) and one with it on. Every property set a known client sends is asked of
both, at Depth 0 and 1, on folders and files with every kind of name, live and dead
property, checksum and lock, and the answers are compared element by element after
parsing. A small
middleware records which path answered, so a silent fall-back to the generic path
cannot pass for a match.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from lxml import etree

from tests.inprocess_server import PathRecorder, inprocess_app_server
from tests.server_fixtures import DEFAULT_USERS

DAV = '<D:propfind xmlns:D="DAV:"><D:prop>{}</D:prop></D:propfind>'

#: what clients send (from their sources and traces; docs/clients.md)
PROPERTY_SETS: dict[str, bytes | None] = {
    "empty body (allprop)": None,
    "allprop": b'<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><allprop/></propfind>',
    "empty propfind": b'<D:propfind xmlns:D="DAV:"/>',
    "Windows Explorer listing": (
        b'<?xml version="1.0" encoding="utf-8" ?><D:propfind xmlns:D="DAV:" '
        b'xmlns:Z="urn:schemas-microsoft-com:"><D:prop><D:creationdate/><D:displayname/>'
        b"<D:getcontentlength/><D:getcontenttype/><D:getetag/><D:getlastmodified/>"
        b"<D:resourcetype/><Z:Win32CreationTime/><Z:Win32LastAccessTime/>"
        b"<Z:Win32LastModifiedTime/><Z:Win32FileAttributes/></D:prop></D:propfind>"),
    "Windows Win32 only": (
        b'<D:propfind xmlns:D="DAV:"><D:prop xmlns:Z="urn:schemas-microsoft-com:">'
        b"<Z:Win32CreationTime/><Z:Win32LastAccessTime/><Z:Win32LastModifiedTime/>"
        b"<Z:Win32FileAttributes/></D:prop></D:propfind>"),
    "rclone": (
        b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
        b"<d:displayname/><d:getlastmodified/><d:getcontentlength/><d:resourcetype/>"
        b"<d:getcontenttype/></d:prop></d:propfind>"),
    "rclone owncloud": (
        b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
        b'xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns"><d:prop>'
        b"<d:displayname/><d:getlastmodified/><d:getcontentlength/><d:resourcetype/>"
        b"<d:getcontenttype/><oc:checksums/><oc:permissions/></d:prop></d:propfind>"),
    "davfs2": DAV.format(
        "<D:resourcetype/><D:getcontentlength/><D:getetag/><D:getlastmodified/>"
        "<D:creationdate/><D:displayname/><E:executable xmlns:E=\"http://apache.org/dav/props/\"/>"
    ).encode(),
    "davfs2 quota": DAV.format("<D:quota-available-bytes/><D:quota-used-bytes/>").encode(),
    "Finder": DAV.format(
        "<D:getlastmodified/><D:getcontentlength/><D:creationdate/><D:resourcetype/>").encode(),
    "Finder item": DAV.format(
        "<D:getlastmodified/><D:getcontentlength/><D:creationdate/><D:resourcetype/><D:getetag/>"
        '<A:appledoubleheader xmlns:A="http://www.apple.com/webdav_fs/props/"/>').encode(),
    "GNOME gvfs": DAV.format(
        "<D:creationdate/><D:displayname/><D:getcontentlength/><D:getcontenttype/>"
        "<D:getetag/><D:getlastmodified/><D:resourcetype/>").encode(),
    "KDE kio": DAV.format(
        "<D:creationdate/><D:getcontentlength/><D:displayname/><D:source/>"
        "<D:getcontentlanguage/><D:getcontenttype/><D:getetag/><D:getlastmodified/>"
        '<D:resourcetype/><D:supportedlock/><D:lockdiscovery/>'
        '<E:executable xmlns:E="http://apache.org/dav/props/"/>').encode(),
    "cadaver": DAV.format(
        "<D:getcontentlength/><D:getlastmodified/><D:resourcetype/>"
        '<E:executable xmlns:E="http://apache.org/dav/props/"/>').encode(),
    "dead properties": DAV.format(
        '<x:complex xmlns:x="urn:x"/><x:lang xmlns:x="urn:x"/><x:esc xmlns:x="urn:x"/>'
        '<x:empty xmlns:x="urn:x"/><x:missing xmlns:x="urn:x"/><D:nonesuch/>').encode(),
    "locks": DAV.format("<D:lockdiscovery/><D:supportedlock/>").encode(),
}

FILES = {
    "IMG_0001.JPG": b"\xff\xd8jpeg",
    "notes.txt": b"plain text\n",
    "archive.tar.gz": b"\x1f\x8b",
    "a.b.tgz": b"t",
    "README": b"r",
    ".hidden": b"h",
    "caf\u00e9 & cr\u00e8me (1).pdf": b"%PDF",
    "\u65e5\u672c\u8a9e.docx": b"PK",
    "100% sure;a,b+c=d.bin": b"\x00",
    "x'y.html": b"<html/>",
    "empty.dat": b"",
}
WIN32 = ('<Z:Win32CreationTime>Mon, 02 Mar 2026 08:00:00 GMT</Z:Win32CreationTime>'
         '<Z:Win32LastAccessTime>Tue, 03 Mar 2026 09:30:00 GMT</Z:Win32LastAccessTime>'
         '<Z:Win32LastModifiedTime>Tue, 03 Mar 2026 09:15:00 GMT</Z:Win32LastModifiedTime>'
         '<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>')
ODD_DEAD = ('<x:complex a="1"><x:child>t</x:child><y:other xmlns:y="urn:y">u</y:other></x:complex>'
            '<x:lang xml:lang="de">Gr\u00fc\u00dfe</x:lang>'
            '<x:esc>a &amp; b &lt; c &gt; d\u00a0"q"</x:esc><x:empty/>')

#: (path, depth) pairs asked with every property set
TARGETS = [("/", "0"), ("/", "1"), ("/cmp/", "0"), ("/cmp/", "1"), ("/cmp/notes.txt", "0"),
           ("/cmp/notes.txt", "1"), ("/cmp/sub", "1"), ("/cmp/empty/", "1"), ("/locked/", "1"),
           ("/locked/dir/", "0")]


def _proppatch(session: requests.Session, url: str, props: str) -> None:
    body = ('<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
            'xmlns:Z="urn:schemas-microsoft-com:" xmlns:x="urn:x"><D:set><D:prop>'
            f"{props}</D:prop></D:set></D:propertyupdate>").encode()
    answer = session.request("PROPPATCH", url, data=body, headers={"Content-Type": "application/xml"})
    assert answer.status_code == 207 and b"200 OK" in answer.content, answer.text


def _lock(session: requests.Session, url: str, depth: str, scope: str) -> None:
    body = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
            f"<D:lockscope><D:{scope}/></D:lockscope><D:locktype><D:write/></D:locktype>"
            "<D:owner><D:href>mailto:alice@example.org</D:href></D:owner></D:lockinfo>")
    answer = session.request("LOCK", url, data=body, headers={"Depth": depth, "Timeout": "Second-3600"})
    assert answer.status_code == 200, answer.text


def populate(url: str) -> None:
    with requests.Session() as s:
        s.auth = ("alice", DEFAULT_USERS["alice"][0])
        for folder in ("cmp/", "cmp/sub/", "cmp/empty/", "locked/", "locked/dir/"):
            assert s.request("MKCOL", url + folder).status_code == 201
        for name, data in FILES.items():
            assert s.put(url + "cmp/" + quote(name), data=data).status_code == 201
        sha1 = hashlib.sha1(b"hello").hexdigest()
        assert s.put(url + "cmp/sum.bin", data=b"hello", headers={"OC-Checksum": f"SHA1:{sha1}"}).status_code == 201
        assert s.put(url + "cmp/mtime.txt", data=b"m", headers={"X-OC-Mtime": "1000000000"}).status_code == 201
        for name in ("IMG_0001.JPG", "notes.txt"):
            _proppatch(s, url + "cmp/" + name, WIN32)
        _proppatch(s, url + "cmp/notes.txt", ODD_DEAD)
        _proppatch(s, url + "cmp/sub/", "<Z:Win32FileAttributes>00000010</Z:Win32FileAttributes>")
        _proppatch(s, url, "<x:esc>root property</x:esc>")
        assert s.put(url + "locked/f.txt", data=b"f").status_code == 201
        assert s.put(url + "locked/g.txt", data=b"g").status_code == 201
        _lock(s, url + "locked/f.txt", "0", "exclusive")
        _lock(s, url + "locked/dir/", "infinity", "shared")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, PathRecorder]]:
    work = tmp_path_factory.mktemp("propfind-direct")
    with inprocess_app_server(work, propfind_direct=False) as (generic_url, repo):
        populate(generic_url + "/")
        recorder: list[PathRecorder] = []

        def wrap(app: Any) -> Any:
            recorder.append(PathRecorder(app, "PROPFIND", "davbackup.propfind", "?"))
            return recorder[0]

        with inprocess_app_server(work, propfind_direct=True, repo=repo, wrap=wrap) as (direct_url, _):
            yield generic_url, direct_url, recorder[0]


_TIMEOUT = re.compile(rb"Second-\d+")


def canonical(element: Any) -> tuple:
    """An element as comparable data: name, attributes, text, children (lock timeouts
    count down between two requests and free space changes: only their form is compared)."""
    text = element.text or ""
    if re.fullmatch(r"Second-\d+", text):
        text = "Second-N"
    if element.tag == "{DAV:}quota-available-bytes" and text.isdigit():
        text = "N"  # the disk's free space, which other processes change
    return (element.tag, tuple(sorted(element.attrib.items())), text,
            tuple(canonical(child) for child in element))


def parsed(body: bytes) -> list[tuple[str, dict[str, dict[str, tuple]]]]:
    """``[(href, {status: {property: canonical value}})]`` in answer order."""
    root = etree.fromstring(body)
    assert root.tag == "{DAV:}multistatus"
    out = []
    for response in root:
        href = response.findtext("{DAV:}href")
        by_status: dict[str, dict[str, tuple]] = {}
        for propstat in response.findall("{DAV:}propstat"):
            status = propstat.findtext("{DAV:}status")
            props = by_status.setdefault(status, {})
            for prop in propstat.find("{DAV:}prop"):
                assert prop.tag not in props
                props[prop.tag] = canonical(prop)
        out.append((href, by_status))
    return out


def ask(url: str, body: bytes | None, depth: str) -> requests.Response:
    headers = {"Depth": depth}
    if body is not None:
        headers["Content-Type"] = "application/xml"
    return requests.request("PROPFIND", url, data=body, headers=headers,
                            auth=("alice", DEFAULT_USERS["alice"][0]), timeout=60)


@pytest.mark.parametrize("set_name", list(PROPERTY_SETS))
def test_direct_path_answers_as_the_generic_path(servers: tuple[str, str, PathRecorder], set_name: str) -> None:
    generic_url, direct_url, recorder = servers
    body = PROPERTY_SETS[set_name]
    for path, depth in TARGETS:
        del recorder.seen[:]
        reference = ask(generic_url + quote(path), body, depth)
        answer = ask(direct_url + quote(path), body, depth)
        where = f"{set_name}, PROPFIND {path} Depth {depth}"
        assert reference.status_code == answer.status_code == 207, where
        assert recorder.seen == ["direct"], f"{where}: answered by {recorder.seen}"
        assert answer.headers["Content-Type"] == reference.headers["Content-Type"]
        assert parsed(answer.content) == parsed(reference.content), where
        # never longer: a stored value's unused namespace declarations (those in scope
        # at its PROPPATCH) are dropped, characters outside ASCII may stay references
        assert len(_TIMEOUT.sub(b"S", answer.content)) <= len(_TIMEOUT.sub(b"S", reference.content)), where


def test_propname_and_unusual_requests_take_the_generic_path(servers: tuple[str, str, PathRecorder]) -> None:
    generic_url, direct_url, recorder = servers
    propname = b'<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
    no_namespace = b'<D:propfind xmlns:D="DAV:"><D:prop><plain xmlns=""/></D:prop></D:propfind>'
    history = f"/.history/{'2030-01-01T000000Z'}/"
    for path, body in (("/cmp/", propname), ("/cmp/", no_namespace), (history, None)):
        del recorder.seen[:]
        reference = ask(generic_url + path, body, "1")
        answer = ask(direct_url + path, body, "1")
        assert recorder.seen == ["generic"], path
        assert answer.status_code == reference.status_code == 207
        assert parsed(answer.content) == parsed(reference.content)


def test_answers_follow_changes(servers: tuple[str, str, PathRecorder]) -> None:
    """A property written through one server shows in both (nothing cached across requests)."""
    generic_url, direct_url, _recorder = servers
    with requests.Session() as s:
        s.auth = ("alice", DEFAULT_USERS["alice"][0])
        assert s.put(direct_url + "/cmp/late.txt", data=b"late").status_code == 201
        _proppatch(s, direct_url + "/cmp/late.txt", "<x:esc>late &amp; new</x:esc>")
    body = PROPERTY_SETS["dead properties"]
    reference, answer = ask(generic_url + "/cmp/", body, "1"), ask(direct_url + "/cmp/", body, "1")
    assert parsed(answer.content) == parsed(reference.content)
    assert b"late &amp; new" in answer.content


def test_concurrent_listings_agree(servers: tuple[str, str, PathRecorder]) -> None:
    generic_url, direct_url, _recorder = servers
    body = PROPERTY_SETS["Windows Explorer listing"]
    expected = parsed(ask(generic_url + "/cmp/", body, "1").content)
    results: list[Any] = []

    def worker() -> None:
        for _ in range(5):
            results.append(parsed(ask(direct_url + "/cmp/", body, "1").content))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and all(r == expected for r in results)
