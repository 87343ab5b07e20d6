"""Range PUT (``Content-Range: bytes S-E/T``) against a real server: every answer of the
table in provider/resumable/range_put.py, and that a refused request changes nothing."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.resume_fixtures import HalfSent, sha256_b64
from tests.server_fixtures import DavServer

T = 3 * 1024 * 1024


@pytest.fixture
def url(shared_dav_server: DavServer) -> str:
    return f"{shared_dav_server.url}/range-{uuid.uuid4().hex[:8]}.bin"


@pytest.fixture
def data() -> bytes:
    return os.urandom(T)


def part(session: requests.Session, url: str, data: bytes, start: int, end: int, total: int | None = None,
         **headers: str) -> requests.Response:
    total = len(data) if total is None else total
    return session.put(url, data=data[start:end + 1], headers={"Content-Range": f"bytes {start}-{end}/{total}",
                                                                **headers})


def query(session: requests.Session, url: str, total: int, **headers: str) -> requests.Response:
    return session.put(url, data=b"", headers={"Content-Range": f"bytes */{total}", **headers})


def held(response: requests.Response) -> int:
    return int(response.headers["Upload-Offset"])


def test_offset_query_without_session(alice, url):
    r = query(alice, url, T)
    assert r.status_code == 308
    assert r.headers["Upload-Offset"] == "0"
    assert "Range" not in r.headers
    assert alice.head(url).status_code == 404  # a query creates nothing


def test_parts_then_complete_new_and_replaced(alice, url, data):
    r = part(alice, url, data, 0, 999_999)
    assert r.status_code == 308
    assert r.headers["Range"] == "bytes=0-999999"
    assert held(r) == 1_000_000
    assert alice.head(url).status_code == 404  # nothing visible before the last byte
    r = query(alice, url, T)
    assert (r.status_code, r.headers["Range"], held(r)) == (308, "bytes=0-999999", 1_000_000)
    r = part(alice, url, data, 1_000_000, T - 1)
    assert r.status_code == 201
    etag = r.headers["ETag"]
    got = alice.get(url)
    assert got.content == data and got.headers["ETag"] == etag

    other = os.urandom(T)
    assert part(alice, url, other, 0, T // 2 - 1).status_code == 308
    assert alice.get(url).content == data  # the old version stays until complete
    r = part(alice, url, other, T // 2, T - 1)
    assert r.status_code == 204 and r.headers["ETag"] != etag
    assert alice.get(url).content == other


def test_query_after_completion_reports_complete(alice, url, data):
    assert part(alice, url, data, 0, T - 1).status_code == 201
    r = query(alice, url, T, **{"Repr-Digest": f"sha-256=:{sha256_b64(data)}:"})
    assert r.status_code == 200 and held(r) == T and r.headers["ETag"]


def test_overlap_is_skipped(alice, url, data):
    assert held(part(alice, url, data, 0, 1_499_999)) == 1_500_000
    r = part(alice, url, data, 1_000_000, 1_999_999)  # 500,000 bytes overlap
    assert r.status_code == 308 and held(r) == 2_000_000
    r = part(alice, url, data, 0, 999_999)  # wholly held already
    assert r.status_code == 308 and held(r) == 2_000_000
    assert part(alice, url, data, 1_500_000, T - 1).status_code == 201
    assert alice.get(url).content == data


def test_gap_is_refused_and_changes_nothing(alice, url, data):
    part(alice, url, data, 0, 999_999)
    r = part(alice, url, data, 1_000_001, T - 1)
    assert r.status_code == 409
    assert held(r) == 1_000_000 and r.headers["Range"] == "bytes=0-999999"
    assert held(query(alice, url, T)) == 1_000_000
    r = part(alice, url, data, 500_000, T - 1)
    assert r.status_code == 201
    assert alice.get(url).content == data


def test_first_part_must_start_at_zero(alice, url, data):
    r = part(alice, url, data, 10, 99)
    assert r.status_code == 409 and held(r) == 0
    assert held(query(alice, url, T)) == 0


def test_changed_total_is_refused(alice, url, data):
    part(alice, url, data, 0, 999_999)
    r = part(alice, url, data + b"x", 1_000_000, 1_999_999, total=T + 1)
    assert r.status_code == 409
    assert held(r) == 1_000_000 and r.headers["Upload-Length"] == str(T)
    assert held(query(alice, url, T)) == 1_000_000  # unchanged
    r = query(alice, url, T + 1)  # "how much of the other file?" nothing
    assert r.status_code == 308 and held(r) == 0
    assert held(query(alice, url, T)) == 1_000_000


def test_new_first_part_of_another_file_starts_over(alice, url, data):
    part(alice, url, data, 0, 999_999)
    small = os.urandom(1000)
    r = part(alice, url, small, 0, 999)
    assert r.status_code == 201
    assert alice.get(url).content == small


def test_changed_digest_is_another_file(alice, url, data):
    digest = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:"}
    part(alice, url, data, 0, 999_999, **digest)
    other = {"Repr-Digest": f"sha-256=:{sha256_b64(b'other')}:"}
    r = part(alice, url, data, 1_000_000, 1_999_999, **other)
    assert r.status_code == 409 and held(r) == 1_000_000
    assert held(query(alice, url, T, **other)) == 0
    assert held(query(alice, url, T, **digest)) == 1_000_000


@pytest.mark.parametrize("header", [
    "bytes 0-99",  # no total
    "bytes=0-99/100",  # Range syntax
    "bytes 100-0/3145728",  # end before start
    "bytes 0-3145728/3145728",  # end beyond the total
    "items 0-9/10",
    "bytes -5/10",
])
def test_malformed_range_is_400_and_changes_nothing(alice, url, data, header):
    part(alice, url, data, 0, 999)
    r = alice.put(url, data=data[:100], headers={"Content-Range": header})
    assert r.status_code == 400
    assert held(r) == 1000
    assert held(query(alice, url, T)) == 1000


def test_body_length_must_match_range(alice, url, data):
    r = alice.put(url, data=data[:99], headers={"Content-Range": f"bytes 0-99/{T}"})
    assert r.status_code == 400 and held(r) == 0
    assert held(query(alice, url, T)) == 0
    r = alice.put(url, data=b"x", headers={"Content-Range": f"bytes */{T}"})
    assert r.status_code == 400


def test_digest_mismatch_keeps_old_version(alice, url, data):
    old = os.urandom(1000)
    assert alice.put(url, data=old).status_code == 201
    wrong = {"Repr-Digest": f"sha-256=:{sha256_b64(b'not the data')}:"}
    assert part(alice, url, data, 0, 999_999, **wrong).status_code == 308
    r = part(alice, url, data, 1_000_000, T - 1, **wrong)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"
    assert "digest-mismatch" in r.json()["type"]
    assert held(r) == 0
    assert alice.get(url).content == old
    assert held(query(alice, url, T)) == 0  # the session is gone


def test_digests_that_match(alice, url, data):
    headers = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:",
               "OC-Checksum": f"SHA1:{hashlib.sha1(data).hexdigest()}"}
    part(alice, url, data, 0, 999_999, **headers)
    assert part(alice, url, data, 1_000_000, T - 1, **headers).status_code == 201
    assert alice.get(url).content == data


def test_oc_checksum_mismatch(alice, url, data):
    bad = {"OC-Checksum": f"SHA1:{hashlib.sha1(b'x').hexdigest()}"}
    assert part(alice, url, data, 0, T - 1, **bad).status_code == 400
    assert alice.head(url).status_code == 404


@pytest.mark.parametrize("value", ["sha-256=abc", "sha-256=:!!:", "sha-256=:YWJj:"])
def test_malformed_digest_is_400(alice, url, data, value):
    r = part(alice, url, data, 0, 999, **{"Repr-Digest": value})
    assert r.status_code == 400
    assert held(query(alice, url, T)) == 0


def test_unknown_digest_algorithms_are_ignored(alice, url, data):
    r = part(alice, url, data, 0, T - 1, **{"Repr-Digest": "sha-512=:AAAA:"})
    assert r.status_code == 201


def test_whole_put_supersedes_session(alice, url, data):
    part(alice, url, data, 0, 999_999)
    whole = os.urandom(5000)
    assert alice.put(url, data=whole).status_code == 201
    r = query(alice, url, T)
    assert r.status_code == 308 and held(r) == 0
    r = part(alice, url, data, 1_000_000, 1_999_999)
    assert r.status_code == 409 and held(r) == 0
    assert alice.get(url).content == whole


def test_concurrent_resumers(shared_dav_server, alice, url, data):
    """A second request for the session while the first still runs: 423, nothing corrupted."""
    part(alice, url, data, 0, 999_999)
    first = HalfSent(shared_dav_server.port, "PUT", urlsplit(url).path,
                     shared_dav_server.auth(), {"Content-Range": f"bytes 1000000-1999999/{T}"},
                     data[1_000_000:2_000_000], 300_000)
    time.sleep(0.5)  # the server is inside the append now
    r = part(alice, url, data, 1_000_000, T - 1)
    assert r.status_code == 423
    assert r.headers["Retry-After"] and "Upload-Offset" in r.headers
    assert first.finish() == 308
    first.cut()
    r = part(alice, url, data, 0, T - 1)  # overlap with everything held
    assert r.status_code == 201
    assert alice.get(url).content == data


def test_two_racing_resumers_never_corrupt(alice, url, data):
    part(alice, url, data, 0, 99_999)
    results: list[int] = []

    def resume() -> None:
        session = requests.Session()
        session.auth = alice.auth
        for _ in range(40):
            q = query(session, url, T)
            if q.status_code == 200:
                results.append(200)
                return
            if q.status_code != 308:
                time.sleep(0.05)
                continue
            start = held(q)
            r = part(session, url, data, start, min(start + 400_000, T) - 1)
            results.append(r.status_code)
            if r.status_code in (201, 204):
                return

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) <= {308, 423, 409, 201, 204, 200}
    assert alice.get(url).content == data


def test_if_match_and_locks_are_respected(shared_dav_server, alice, url, data):
    assert alice.put(url, data=b"old").status_code == 201
    r = part(alice, url, data, 0, 999, **{"If-Match": '"not-the-etag"'})
    assert r.status_code == 412
    lock_body = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                 '<D:locktype><D:write/></D:locktype></D:lockinfo>')
    r = alice.request("LOCK", url, data=lock_body, headers={"Timeout": "Second-60"})
    assert r.status_code == 200
    token = r.headers["Lock-Token"]
    anon = requests.Session()
    anon.auth = alice.auth
    assert part(anon, url, data, 0, 999).status_code == 423  # no lock token
    r = part(alice, url, data, 0, T - 1, **{"If": f"({token})"})
    assert r.status_code == 204
    alice.request("UNLOCK", url, headers={"Lock-Token": token})


def test_read_only_user_is_refused(shared_dav_server, url, data):
    reader = shared_dav_server.session("reader")
    assert part(reader, url, data, 0, 999).status_code == 403


def test_collection_and_missing_parent(shared_dav_server, alice, data):
    folder = f"{shared_dav_server.url}/dir-{uuid.uuid4().hex[:6]}"
    assert alice.request("MKCOL", folder).status_code == 201
    assert part(alice, folder, data, 0, 999).status_code == 405
    assert part(alice, f"{folder}/missing/x.bin", data, 0, 999).status_code == 409


def test_options_advertise_partial_updates(shared_dav_server, alice, url):
    r = alice.options(shared_dav_server.url + "/")
    assert "sabredav-partialupdate" in r.headers["DAV"]
    assert "1" in r.headers["DAV"] and "2" in r.headers["DAV"]
    assert "application/partial-upload" in r.headers["Accept-Patch"]
    assert "application/x-sabredav-partialupdate" in r.headers["Accept-Patch"]


def test_reserved_prefix_refuses_files(shared_dav_server, alice):
    base = shared_dav_server.url + "/.well-known"
    alice.request("MKCOL", base)
    assert alice.request("MKCOL", base + "/davbackup-uploads").status_code == 403
    assert alice.put(base + "/davbackup-uploads", data=b"x").status_code == 403
    assert alice.put(base + "/davbackup-uploads/x", data=b"x").status_code == 405
    assert alice.put(shared_dav_server.url + "/elsewhere.txt", data=b"x").status_code == 201
    r = alice.request("MOVE", shared_dav_server.url + "/elsewhere.txt",
                      headers={"Destination": base + "/davbackup-uploads/z"})
    assert r.status_code == 403


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 400_000), cuts=st.lists(st.floats(0, 1), max_size=6),
       back=st.lists(st.integers(0, 50_000), min_size=7, max_size=7), seed=st.binary(min_size=8, max_size=8))
def test_any_part_sequence_assembles_the_file(shared_dav_server, size, cuts, back, seed):
    """Parts at arbitrary boundaries, each possibly re-sending bytes already held."""
    data = random.Random(seed).randbytes(size)
    url = f"{shared_dav_server.url}/prop-{uuid.uuid4().hex}.bin"
    alice = shared_dav_server.session("alice")
    bounds = sorted({0, size, *(int(c * size) for c in cuts)})
    offset = 0
    for i, end in enumerate(bounds[1:]):
        start = max(0, offset - back[i])
        if end <= start:
            continue
        r = part(alice, url, data, start, end - 1)
        if end == size:
            assert r.status_code == 201, r.text
        else:
            assert r.status_code == 308 and held(r) == end
        offset = end
    assert alice.get(url).content == data


def test_racing_first_parts_share_one_session(shared_dav_server, url, data):
    """Found by scripts/soak: first parts of one upload racing each other each created a
    session; the offset acknowledged to one was then lost (next part: 409 "missing")."""
    racers = 12
    for attempt in range(6):
        target = f"{url}-{attempt}"
        results: list[requests.Response] = []
        barrier = threading.Barrier(racers)

        def send(n: int) -> None:
            session = shared_dav_server.session("alice")
            barrier.wait()
            results.append(part(session, target, data, 0, (n + 1) * (T // 2 // racers) - 1))

        threads = [threading.Thread(target=send, args=(n,)) for n in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {r.status_code for r in results} <= {308, 423}
        acknowledged = max(held(r) for r in results if r.status_code == 308)
        alice = shared_dav_server.session("alice")
        assert held(query(alice, target, T)) >= acknowledged
        assert part(alice, target, data, acknowledged, T - 1).status_code == 201
        assert alice.get(target).content == data
