"""History across the upload protocols: a SabreDAV PATCH and a completed range-PUT
upload each make a new version, and the previous one stays readable."""

from __future__ import annotations

import time

import requests

from tests.provider_http_helpers import multistatus, propfind
from tests.server_fixtures import DavServer


def next_second() -> None:
    time.sleep(1.05 - (time.time() % 1.0))


def versions(server: DavServer, session: requests.Session, path: str) -> list[bytes]:
    folder = f"{server.url}/.versions{path}/"
    names = sorted(h.rsplit("/", 1)[-1] for h in multistatus(propfind(session, folder)) if not h.endswith("/"))
    return [session.get(folder + name).content for name in names]


def test_patch_and_range_put_make_versions(server: DavServer, alice: requests.Session, base: str) -> None:
    path = base[len(server.url):] + "log.txt"
    assert alice.put(base + "log.txt", data=b"line 1\n").status_code == 201
    next_second()
    patched = alice.request("PATCH", base + "log.txt", data=b"line 2\n", headers={
        "Content-Type": "application/x-sabredav-partialupdate", "X-Update-Range": "append"})
    assert patched.status_code == 204, patched.text
    next_second()
    body = b"whole new content, sent in two parts"
    first = alice.put(base + "log.txt", data=body[:10], headers={"Content-Range": f"bytes 0-9/{len(body)}"})
    assert first.status_code == 308, first.text
    assert alice.get(base + "log.txt").content == b"line 1\nline 2\n"  # unfinished: old version served
    last = alice.put(base + "log.txt", data=body[10:],
                     headers={"Content-Range": f"bytes 10-{len(body) - 1}/{len(body)}"})
    assert last.status_code == 204, last.text  # the file existed: it gets a new version
    next_second()
    assert versions(server, alice, path) == [b"line 1\n", b"line 1\nline 2\n", body]
