"""Fixtures and helpers shared by the HTTP-level provider tests."""

from __future__ import annotations

import base64
import http.client
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
import requests
from lxml import etree

from tests.server_fixtures import DavServer

DAV = "{DAV:}"
LOCK_BODY = """<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>
<D:locktype><D:write/></D:locktype><D:owner>tests</D:owner></D:lockinfo>"""
XML = {"Content-Type": "application/xml; charset=utf-8"}


@pytest.fixture
def server(shared_dav_server: DavServer) -> DavServer:
    return shared_dav_server


@pytest.fixture
def alice(server: DavServer) -> Iterator[requests.Session]:
    with server.session("alice") as session:
        yield session


@pytest.fixture
def base(server: DavServer, alice: requests.Session) -> str:
    """A fresh collection of alice's for this test: its URL, ending in '/'."""
    url = f"{server.url}/t-{uuid.uuid4().hex[:10]}/"
    assert alice.request("MKCOL", url).status_code == 201
    return url


def propfind(session: requests.Session, url: str, depth: str | None = "1",
             body: str | None = None) -> requests.Response:
    headers = dict(XML)
    if depth is not None:
        headers["Depth"] = depth
    return session.request("PROPFIND", url, data=body, headers=headers)


def multistatus(response: requests.Response) -> dict[str, etree._Element]:
    """href (unquoted path) -> <response> element."""
    assert response.status_code == 207, response.text
    root = etree.fromstring(response.content)
    return {unquote(r.findtext(f"{DAV}href")): r for r in root.iter(f"{DAV}response")}


def prop_value(response_el: etree._Element, tag: str) -> etree._Element | None:
    for propstat in response_el.iter(f"{DAV}propstat"):
        if "200" in (propstat.findtext(f"{DAV}status") or ""):
            found = propstat.find(f"{DAV}prop/{tag}")
            if found is not None:
                return found
    return None


def proppatch(session: requests.Session, url: str, name: str, value: str | None,
              ns: str = "urn:test") -> requests.Response:
    if value is None:
        op = f'<D:remove><D:prop><x:{name} xmlns:x="{ns}"/></D:prop></D:remove>'
    else:
        op = f'<D:set><D:prop><x:{name} xmlns:x="{ns}">{value}</x:{name}></D:prop></D:set>'
    body = f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:">{op}</D:propertyupdate>'
    return session.request("PROPPATCH", url, data=body, headers=XML)


def dead_prop(session: requests.Session, url: str, name: str, ns: str = "urn:test") -> str | None:
    body = (f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
            f'<x:{name} xmlns:x="{ns}"/></D:prop></D:propfind>')
    responses = multistatus(propfind(session, url, "0", body))
    (element,) = responses.values()
    value = prop_value(element, f"{{{ns}}}{name}")
    return None if value is None else (value.text or "")


def lock(session: requests.Session, url: str, depth: str = "0",
         timeout: str = "Second-3600") -> requests.Response:
    return session.request("LOCK", url, data=LOCK_BODY,
                           headers={**XML, "Depth": depth, "Timeout": timeout})


def lock_token(response: requests.Response) -> str:
    return response.headers["Lock-Token"].strip("<>")


def raw_request(server: DavServer, method: str, path: str, *, user: str = "alice",
                headers: dict[str, str] | None = None, body: bytes | None = None
                ) -> tuple[int, bytes]:
    """Send ``path`` byte for byte (no client-side normalization)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        token = base64.b64encode(f"{user}:{server.password(user)}".encode()).decode()
        conn.putheader("Authorization", f"Basic {token}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def send_truncated(server: DavServer, path: str, head: dict[str, str], body: bytes,
                   user: str = "alice") -> int:
    """Send headers and ``body``, then close the sending side; the status answered."""
    token = base64.b64encode(f"{user}:{server.password(user)}".encode()).decode()
    lines = [f"PUT {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             f"Authorization: Basic {token}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in head.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


