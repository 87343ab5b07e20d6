"""Unit tests of the client-compatibility pieces (provider.client_compat, provider.propfind)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from wsgidav.dav_error import DAVError

from davbackup.errors import UsageError
from provider.client_compat import decode_wsgi_path, is_os_metadata, win32_modified
from provider.config_file import load_options, settings_from_options
from provider.propfind import multistatus_bytes, parse_request


def wsgi(text: str) -> str:
    return text.encode().decode("latin-1")


@pytest.mark.parametrize(("raw", "decoded"), [
    ("/caf%C3%A9/", "/café/"),
    ("/a%20b/%E6%97%A5", "/a b/日"),
    ("/a%2Fb%2fc", "/a%2Fb%2Fc"),  # encoded slashes stay encoded, as for other methods
    ("/plain", "/plain"),
])
def test_decode_options_path(raw: str, decoded: str) -> None:
    assert decode_wsgi_path(raw) == wsgi(decoded)


@pytest.mark.parametrize(("name", "expected"), [
    (".DS_Store", True), ("._Foto.jpg", True), ("._", True), ("Thumbs.db", True),
    ("thumbs.DB", True), ("desktop.ini", True), ("Desktop.INI", True),
    ("DS_Store", False), ("_Foto.jpg", False), (".Foto", False), ("Thumbs.db.bak", False),
])
def test_os_metadata_names(name: str, expected: bool) -> None:
    assert is_os_metadata(name) is expected


def test_win32_modified() -> None:
    value = ('<Z:Win32LastModifiedTime xmlns:Z="urn:schemas-microsoft-com:">'
             "Tue, 03 Mar 2026 09:15:00 GMT</Z:Win32LastModifiedTime>")
    assert win32_modified(value) == 1772529300
    assert win32_modified("<Z:x xmlns:Z='urn:schemas-microsoft-com:'>soon</Z:x>") is None
    assert win32_modified("not xml") is None


def test_config_os_metadata(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("webdav:\n  os_metadata: skip\n")
    assert settings_from_options(load_options(config)).os_metadata == "skip"
    assert settings_from_options({}).os_metadata == "store"
    config.write_text("webdav:\n  os_metadata: drop\n")
    with pytest.raises(UsageError, match="os_metadata"):
        settings_from_options(load_options(config))


def request(body: str) -> etree._Element:
    return etree.fromstring(body)


def test_parse_propfind_request() -> None:
    assert parse_request(None) == ("allprop", [])
    assert parse_request(request('<D:propfind xmlns:D="DAV:"/>')) == ("allprop", [])
    assert parse_request(request(
        '<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>')) == ("name", [])
    assert parse_request(request(
        '<D:propfind xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:prop>'
        "<D:getetag/><!-- c --><Z:Win32FileAttributes/></D:prop></D:propfind>")) == (
        "named", ["{DAV:}getetag", "{urn:schemas-microsoft-com:}Win32FileAttributes"])
    with pytest.raises(DAVError):
        parse_request(request('<D:propfind xmlns:D="DAV:"><D:allprop/><D:prop/></D:propfind>'))
    with pytest.raises(DAVError):
        parse_request(request('<D:lockinfo xmlns:D="DAV:"/>'))


def test_multistatus_declares_namespaces_once() -> None:
    dead = etree.fromstring('<x:color xmlns:x="urn:test" xmlns:D="DAV:" xml:lang="de">'
                            "rot<x:shade>dunkel</x:shade> und mehr</x:color>")
    answers = [
        ("/a/", [("{DAV:}resourcetype", etree.fromstring(
            '<D:resourcetype xmlns:D="DAV:"><D:collection/></D:resourcetype>')),
                 ("{urn:schemas-microsoft-com:}Win32FileAttributes", "00000010")]),
        ("/a/f.txt", [("{DAV:}resourcetype", None), ("{DAV:}getcontentlength", "5"),
                      ("{urn:test}color", dead),
                      ("{urn:schemas-microsoft-com:}Win32CreationTime", DAVError(404))]),
    ]
    body = multistatus_bytes(answers)
    assert body.count(b"xmlns") == 3  # D, Z, n0 (urn:test): all on the root
    root = etree.fromstring(body)
    assert root.nsmap == {"D": "DAV:", "Z": "urn:schemas-microsoft-com:", "n0": "urn:test"}
    color = root.find(".//{urn:test}color")
    assert color.text == "rot" and color[0].text == "dunkel" and color[0].tail == " und mehr"
    assert color.get("{http://www.w3.org/XML/1998/namespace}lang") == "de"
    statuses = [s.text for s in root.iter("{DAV:}status")]
    assert statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"]
    assert b"<D:resourcetype/>" in body
