"""Uploads that survive broken connections, a killed server and expired sessions.

A real TCP proxy cuts every connection after a random number of bytes; each protocol
resumes to a byte-identical file. The server is killed with SIGKILL between parts
(and in the middle of one) and restarted; the upload still finishes.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.resume_fixtures import (
    CuttingProxy,
    HalfSent,
    ietf_loop,
    inprocess_server,
    range_put_loop,
    sabredav_append_loop,
    sha256_b64,
)
from tests.server_fixtures import DavServer

MiB = 1024 * 1024


def session_for(server: DavServer) -> requests.Session:
    return server.session("alice")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_range_put_through_cutting_proxy(shared_dav_server, seed):
    data = os.urandom(6 * MiB + 12345)
    with CuttingProxy(shared_dav_server.port, cut_range=(200_000, 1_500_000), seed=seed) as proxy:
        stats = range_put_loop(session_for(shared_dav_server), f"{proxy.url}/cut-range-{seed}.bin", data, 2 * MiB)
        assert proxy.cuts >= 3 and stats.failures >= 3
    assert session_for(shared_dav_server).get(f"{shared_dav_server.url}/cut-range-{seed}.bin").content == data


@pytest.mark.parametrize("seed", [1, 2])
def test_sabredav_append_through_cutting_proxy(shared_dav_server, seed):
    data = os.urandom(3 * MiB + 777)
    with CuttingProxy(shared_dav_server.port, cut_range=(300_000, 900_000), seed=seed) as proxy:
        stats = sabredav_append_loop(session_for(shared_dav_server), f"{proxy.url}/cut-sabre-{seed}.bin", data,
                                     256 * 1024)
        assert proxy.cuts >= 3 and stats.failures >= 3
    assert session_for(shared_dav_server).get(f"{shared_dav_server.url}/cut-sabre-{seed}.bin").content == data


@pytest.mark.parametrize("seed", [1, 2])
def test_ietf_through_cutting_proxy(shared_dav_server, seed):
    data = os.urandom(5 * MiB + 99)
    with CuttingProxy(shared_dav_server.port, cut_range=(200_000, 1_500_000), seed=seed) as proxy:
        stats = ietf_loop(session_for(shared_dav_server), proxy.url, f"/cut-ietf-{seed}.bin", data, 2 * MiB)
        assert proxy.cuts >= 3 and stats.failures >= 3
    assert session_for(shared_dav_server).get(f"{shared_dav_server.url}/cut-ietf-{seed}.bin").content == data


def test_server_sigkill_between_parts(dav_server):
    data = os.urandom(7 * MiB)
    url = f"{dav_server.url}/killed.bin"
    digest = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:"}
    s = session_for(dav_server)
    r = s.put(url, data=data[:3 * MiB], headers={"Content-Range": f"bytes 0-{3 * MiB - 1}/{len(data)}", **digest})
    assert r.status_code == 308
    dav_server.restart(crash=True)
    s = session_for(dav_server)
    r = s.put(url, data=b"", headers={"Content-Range": f"bytes */{len(data)}", **digest})
    assert r.status_code == 308 and int(r.headers["Upload-Offset"]) == 3 * MiB
    r = s.put(url, data=data[3 * MiB:5 * MiB], headers={"Content-Range": f"bytes {3 * MiB}-{5 * MiB - 1}/{len(data)}",
                                                       **digest})
    assert r.status_code == 308
    dav_server.restart(crash=True)
    s = session_for(dav_server)
    range_put_loop(s, url, data, 3 * MiB)
    assert s.get(url).content == data


def test_server_sigkill_during_a_part(dav_server):
    """Killed while a 20 MiB part streams in: the server resumes from its last checkpoint."""
    data = os.urandom(24 * MiB)
    url = f"{dav_server.url}/killed-mid.bin"
    half = HalfSent(dav_server.port, "PUT", urlsplit(url).path, dav_server.auth(),
                    {"Content-Range": f"bytes 0-{20 * MiB - 1}/{len(data)}"}, data[:20 * MiB], 18 * MiB)
    time.sleep(1.0)
    dav_server.restart(crash=True)
    half.cut()
    s = session_for(dav_server)
    r = s.put(url, data=b"", headers={"Content-Range": f"bytes */{len(data)}"})
    assert r.status_code == 308
    assert 0 <= int(r.headers["Upload-Offset"]) <= 18 * MiB
    range_put_loop(s, url, data, 8 * MiB)
    assert s.get(url).content == data


def test_ietf_survives_server_sigkill(dav_server):
    data = os.urandom(3 * MiB)
    s = session_for(dav_server)
    r = s.post(f"{dav_server.url}/ietf-killed.bin", data=data[:MiB],
               headers={"Upload-Complete": "?0", "Upload-Length": str(len(data))})
    location = dav_server.url + r.headers["Location"]
    dav_server.restart(crash=True)
    s = session_for(dav_server)
    h = s.head(location)
    assert h.status_code == 204 and h.headers["Upload-Offset"] == str(MiB)
    r = s.patch(location, data=data[MiB:], headers={"Content-Type": "application/partial-upload",
                                                    "Upload-Offset": str(MiB), "Upload-Complete": "?1"})
    assert r.status_code == 201
    assert s.get(f"{dav_server.url}/ietf-killed.bin").content == data


def test_expired_sessions(tmp_path: Path):
    with inprocess_server(tmp_path / "ttl", ttl=1.0) as (url, _repo):
        s = requests.Session()
        s.auth = ("alice", "alice-password")
        data = os.urandom(100_000)
        r = s.put(f"{url}/exp.bin", data=data[:50_000], headers={"Content-Range": f"bytes 0-49999/{len(data)}"})
        assert r.status_code == 308
        r = s.post(f"{url}/exp-ietf.bin", data=data[:10], headers={"Upload-Complete": "?0"})
        location = url + r.headers["Location"]
        assert int(r.headers["Upload-Limit"].split("=")[1]) <= 1
        time.sleep(1.6)
        r = s.put(f"{url}/exp.bin", data=b"", headers={"Content-Range": f"bytes */{len(data)}"})
        assert r.status_code == 308 and r.headers["Upload-Offset"] == "0"
        r = s.put(f"{url}/exp.bin", data=data[50_000:], headers={"Content-Range": f"bytes 50000-99999/{len(data)}"})
        assert r.status_code == 409 and r.headers["Upload-Offset"] == "0"
        assert s.head(location).status_code == 404
        r = s.patch(location, data=b"x", headers={"Content-Type": "application/partial-upload",
                                                  "Upload-Offset": "10", "Upload-Complete": "?1"})
        assert r.status_code == 404
        assert s.head(f"{url}/exp.bin").status_code == 404
        assert range_put_loop(s, f"{url}/exp.bin", data, 60_000).requests >= 2
        assert s.get(f"{url}/exp.bin").content == data


def test_many_small_uploads_through_proxy_keep_connections_sane(shared_dav_server):
    """Keep-alive after resume answers: a refused part (409) must not desync the connection."""
    s = session_for(shared_dav_server)
    for i in range(20):
        url = f"{shared_dav_server.url}/ka-{uuid.uuid4().hex[:6]}-{i}"
        assert s.put(url, data=b"abc", headers={"Content-Range": "bytes 1-3/10"}).status_code == 409
        assert s.put(url, data=b"0123456789", headers={"Content-Range": "bytes 0-9/10"}).status_code == 201
        assert s.get(url).content == b"0123456789"
