"""Whole-file PUTs with Repr-Digest (RFC 9530) or OC-Checksum (rclone, ownCloud)."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

from tests.server_fixtures import DavServer


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def test_matching_digests_are_accepted(shared_dav_server: DavServer) -> None:
    s = shared_dav_server.session()
    data = os.urandom(3 * 1024 * 1024 + 5)
    url = f"{shared_dav_server.url}/dg-{uuid.uuid4().hex[:8]}.bin"
    r = s.put(url, data=data, headers={
        "Repr-Digest": f"sha-256=:{_b64(hashlib.sha256(data).digest())}:",
        "OC-Checksum": f"SHA1:{hashlib.sha1(data).hexdigest()}",
    })
    assert r.status_code == 201, r.text
    assert s.get(url).content == data


def test_mismatching_digest_keeps_the_old_version(shared_dav_server: DavServer) -> None:
    s = shared_dav_server.session()
    url = f"{shared_dav_server.url}/dg-{uuid.uuid4().hex[:8]}.bin"
    assert s.put(url, data=b"the old version").status_code == 201
    data = os.urandom(2 * 1024 * 1024)
    r = s.put(url, data=data, headers={"OC-Checksum": f"SHA1:{hashlib.sha1(b'other').hexdigest()}"})
    assert r.status_code == 400
    assert s.get(url).content == b"the old version"
    r = s.put(url, data=data, headers={"Repr-Digest": f"sha-256=:{_b64(hashlib.sha256(b'x').digest())}:"})
    assert r.status_code == 400
    assert s.get(url).content == b"the old version"
    new = f"{shared_dav_server.url}/dg-{uuid.uuid4().hex[:8]}.bin"
    r = s.put(new, data=data, headers={"Repr-Digest": f"sha-256=:{_b64(hashlib.sha256(b'x').digest())}:"})
    assert r.status_code == 400
    assert s.head(new).status_code == 404  # no trace


def test_malformed_digest_header_is_refused(shared_dav_server: DavServer) -> None:
    s = shared_dav_server.session()
    url = f"{shared_dav_server.url}/dg-{uuid.uuid4().hex[:8]}.bin"
    r = s.put(url, data=b"abc", headers={"Repr-Digest": "sha-256=:not base64!:"})
    assert r.status_code == 400
    assert s.head(url).status_code == 404
