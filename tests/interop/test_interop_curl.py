"""curl against a real server: PUT, GET, ranges across chunk boundaries, HEAD,
conditional requests and 416.

The store cuts files into content-defined chunks of 256 KiB - 4 MiB (about 1 MiB on
average) whose cut points depend on a secret seed, so the ranges below are chosen to
cross any boundary: many of them are longer than the largest possible gap between two
cuts or lie around the minimum chunk size, and each is compared with the same slice of
the local file.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.interop_fixtures import MiB, require_tool, url_of
from tests.server_fixtures import DavServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

SIZE = 10 * MiB
KiB = 1024


@dataclass(frozen=True)
class CurlResponse:
    status: int
    headers: dict[str, str]  # lower-case names, last response only (not 100 Continue)
    body: bytes = field(repr=False)


def curl(server: DavServer, path: str, *args: str, user: str = "alice",
         tmp: Path) -> CurlResponse:
    """One curl request; the status, headers and body of the final response.

    With ``-I`` (HEAD) curl writes the header block to ``-o`` as well.
    """
    require_tool("curl")
    body_file = tmp / "curl-body"
    head_file = tmp / "curl-headers"
    body_file.unlink(missing_ok=True)
    cmd = ["curl", "-sS", "--max-time", "120", "-u", f"{user}:{server.password(user)}",
           "-D", str(head_file), "-o", str(body_file), *args, url_of(server, path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, f"{' '.join(cmd)}: {result.stderr}"
    blocks = [b for b in head_file.read_text("latin-1").replace("\r\n", "\n").split("\n\n")
              if b.startswith("HTTP/")]
    lines = blocks[-1].splitlines()
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = body_file.read_bytes() if body_file.exists() else b""
    return CurlResponse(int(lines[0].split()[1]), headers, body)


@pytest.fixture(scope="module")
def uploaded(shared_dav_server: DavServer,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """A 10 MiB random file PUT with curl; (server path, content)."""
    tmp = tmp_path_factory.mktemp("curl")
    data = random.Random(10).randbytes(SIZE)
    local = tmp / "ten.bin"
    local.write_bytes(data)
    assert curl(shared_dav_server, "/curl/", "-X", "MKCOL", tmp=tmp).status == 201
    put = curl(shared_dav_server, "/curl/ten.bin", "-T", str(local), tmp=tmp)
    assert put.status == 201, put
    return "/curl/ten.bin", data


def test_put_then_get_whole_file(shared_dav_server: DavServer,
                                 uploaded: tuple[str, bytes], tmp_path: Path) -> None:
    path, data = uploaded
    got = curl(shared_dav_server, path, tmp=tmp_path)
    assert got.status == 200
    assert int(got.headers["content-length"]) == SIZE
    assert got.body == data


def test_put_overwrite_and_chunked_put(shared_dav_server: DavServer,
                                       tmp_path: Path) -> None:
    first = random.Random(1).randbytes(3 * MiB)
    second = random.Random(2).randbytes(2 * MiB + 1)
    (tmp_path / "a").write_bytes(first)
    (tmp_path / "b").write_bytes(second)
    assert curl(shared_dav_server, "/curl-ow/", "-X", "MKCOL", tmp=tmp_path).status == 201
    assert curl(shared_dav_server, "/curl-ow/f.bin", "-T", str(tmp_path / "a"),
                tmp=tmp_path).status == 201
    assert curl(shared_dav_server, "/curl-ow/f.bin", "-T", str(tmp_path / "b"),
                tmp=tmp_path).status == 204
    assert curl(shared_dav_server, "/curl-ow/f.bin", tmp=tmp_path).body == second
    # a body of unknown length (curl -T - sends Transfer-Encoding: chunked)
    cmd = ["curl", "-sS", "-u", f"alice:{shared_dav_server.password('alice')}", "-T", "-",
           "-o", "/dev/null", "-w", "%{http_code}",
           url_of(shared_dav_server, "/curl-ow/chunked.bin")]
    result = subprocess.run(cmd, input=first, capture_output=True, timeout=120)
    assert result.stdout == b"201", result
    assert curl(shared_dav_server, "/curl-ow/chunked.bin", tmp=tmp_path).body == first


def test_head_reports_size_etag_and_no_body(shared_dav_server: DavServer,
                                            uploaded: tuple[str, bytes],
                                            tmp_path: Path) -> None:
    path, _ = uploaded
    head = curl(shared_dav_server, path, "-I", tmp=tmp_path)
    assert head.status == 200
    assert int(head.headers["content-length"]) == SIZE
    assert head.headers["etag"].startswith('"')
    assert head.headers["accept-ranges"] == "bytes"
    assert "last-modified" in head.headers
    collection = curl(shared_dav_server, "/curl/", "-I", tmp=tmp_path)
    assert collection.status == 200
    missing = curl(shared_dav_server, "/curl/missing.bin", "-I", tmp=tmp_path)
    assert missing.status == 404


def _ranges() -> list[tuple[int, int]]:
    """(first, last) byte positions, inclusive."""
    fixed = [
        (0, 0),
        (0, 256 * KiB),               # around the minimum chunk size
        (256 * KiB - 1, 256 * KiB + 1),
        (MiB - 10, MiB + 10),
        (1_048_000, 3_145_800),      # spans at least one cut
        (4 * MiB - 1, 8 * MiB + 1),  # longer than the largest chunk: spans a cut
        (SIZE - 2 * MiB, SIZE - 1),
        (SIZE - 1, SIZE - 1),
        (0, SIZE - 1),
    ]
    rng = random.Random(42)
    spans = []
    for _ in range(6):
        first = rng.randrange(0, SIZE - 5 * MiB)
        spans.append((first, first + rng.randrange(4 * MiB + 1, 5 * MiB)))
    return fixed + spans


@pytest.mark.parametrize("first,last", _ranges())
def test_range_get(shared_dav_server: DavServer,
                   uploaded: tuple[str, bytes], tmp_path: Path,
                   first: int, last: int) -> None:
    path, data = uploaded
    got = curl(shared_dav_server, path, "-r", f"{first}-{last}", tmp=tmp_path)
    assert got.status == 206
    assert got.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert int(got.headers["content-length"]) == last - first + 1
    assert got.body == data[first:last + 1]


@pytest.mark.parametrize("spec,first", [
    ("-5000", SIZE - 5000),
    ("-1", SIZE - 1),
    (f"-{3 * MiB + 7}", SIZE - 3 * MiB - 7),
    (f"-{SIZE + 1000}", 0),          # longer than the file: the whole file
    ("5000000-", 5_000_000),         # open range
    (f"{SIZE - 1}-", SIZE - 1),
    (f"{MiB}-{SIZE + 5 * MiB}", MiB),  # last byte past the end is clipped
])
def test_suffix_and_open_ranges(shared_dav_server: DavServer,
                                uploaded: tuple[str, bytes], tmp_path: Path,
                                spec: str, first: int) -> None:
    path, data = uploaded
    got = curl(shared_dav_server, path, "-H", f"Range: bytes={spec}", tmp=tmp_path)
    assert got.status == 206
    assert got.headers["content-range"] == f"bytes {first}-{SIZE - 1}/{SIZE}"
    assert got.body == data[first:]


@pytest.mark.parametrize("spec", [f"{SIZE}-", f"{SIZE + 100}-{SIZE + 200}",
                                  "20000000-30000000"])
def test_unsatisfiable_range_is_416(shared_dav_server: DavServer,
                                    uploaded: tuple[str, bytes], tmp_path: Path,
                                    spec: str) -> None:
    path, _ = uploaded
    got = curl(shared_dav_server, path, "-H", f"Range: bytes={spec}", tmp=tmp_path)
    assert got.status == 416
    assert got.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("spec", ["bytes=5-3", f"bytes={MiB}-{MiB - 1}", "bytes=abc",
                                  "bytes=-", "bytes=1-2-3"])
def test_invalid_range_is_never_served_as_partial(
        shared_dav_server: DavServer, uploaded: tuple[str, bytes],
        tmp_path: Path, spec: str) -> None:
    """RFC 9110 §14.1.1/§14.2: an invalid byte-range-spec (last < first, garbage) makes
    the Range header ignorable; the server must not answer 206 with bytes the client
    did not ask for."""
    path, data = uploaded
    got = curl(shared_dav_server, path, "-H", f"Range: {spec}", tmp=tmp_path)
    # ignored: the whole file, as if no Range had been sent
    assert got.status == 200, (
        f"Range: {spec} answered {got.status} Content-Range: "
        f"{got.headers.get('content-range')}")
    assert got.body == data


def test_unknown_range_unit_is_ignored(shared_dav_server: DavServer,
                                       uploaded: tuple[str, bytes], tmp_path: Path) -> None:
    """RFC 9110 §14.2: an origin server MUST ignore a Range with a unit it does not
    understand."""
    path, data = uploaded
    got = curl(shared_dav_server, path, "-H", "Range: items=0-9", tmp=tmp_path)
    assert got.status == 200, (
        f"Range: items=0-9 answered {got.status} Content-Range: "
        f"{got.headers.get('content-range')}")
    assert got.body == data


def test_multiple_ranges_are_all_served_or_ignored(
        shared_dav_server: DavServer, uploaded: tuple[str, bytes],
        tmp_path: Path) -> None:
    """RFC 9110 §14.2: a 206 carries the requested ranges (multipart/byteranges, or one
    part that covers them); a server that will not do that ignores Range (200). It
    must not silently drop one of the ranges."""
    path, data = uploaded
    got = curl(shared_dav_server, path, "-r", f"0-99,{2 * MiB}-{2 * MiB + 99}",
               tmp=tmp_path)
    if got.status == 200:
        assert got.body == data
        return
    assert got.status == 206
    content_type = got.headers.get("content-type", "")
    if content_type.startswith("multipart/byteranges"):
        assert data[0:100] in got.body and data[2 * MiB:2 * MiB + 100] in got.body
        return
    first, last = (int(x) for x in
                   got.headers["content-range"].split()[1].split("/")[0].split("-"))
    assert got.body == data[first:last + 1]
    assert first <= 0 and last >= 2 * MiB + 99, (
        f"asked for 0-99 and {2 * MiB}-{2 * MiB + 99}, got a single part "
        f"{got.headers['content-range']}")


def test_if_range(shared_dav_server: DavServer,
                  uploaded: tuple[str, bytes], tmp_path: Path) -> None:
    path, data = uploaded
    etag = curl(shared_dav_server, path, "-I", tmp=tmp_path).headers["etag"]
    fresh = curl(shared_dav_server, path, "-r", "100-199", "-H", f"If-Range: {etag}",
                 tmp=tmp_path)
    assert fresh.status == 206
    assert fresh.body == data[100:200]
    stale = curl(shared_dav_server, path, "-r", "100-199", "-H", 'If-Range: "stale"',
                 tmp=tmp_path)
    assert stale.status == 200
    assert stale.body == data


def test_if_none_match_and_if_match_on_get(shared_dav_server: DavServer,
                                           uploaded: tuple[str, bytes],
                                           tmp_path: Path) -> None:
    path, data = uploaded
    etag = curl(shared_dav_server, path, "-I", tmp=tmp_path).headers["etag"]
    not_modified = curl(shared_dav_server, path, "-H", f"If-None-Match: {etag}",
                        tmp=tmp_path)
    assert not_modified.status == 304
    assert not_modified.body == b""
    head = curl(shared_dav_server, path, "-I", "-H", f"If-None-Match: {etag}", tmp=tmp_path)
    assert head.status == 304
    other = curl(shared_dav_server, path, "-H", 'If-None-Match: "other"', tmp=tmp_path)
    assert other.status == 200 and other.body == data
    assert curl(shared_dav_server, path, "-H", f"If-Match: {etag}",
                tmp=tmp_path).status == 200
    assert curl(shared_dav_server, path, "-H", 'If-Match: "other"',
                tmp=tmp_path).status == 412


def test_conditional_put(shared_dav_server: DavServer, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"version one\n" * 1000)
    two.write_bytes(b"version two\n" * 1000)
    assert curl(shared_dav_server, "/curl-cond/", "-X", "MKCOL", tmp=tmp_path).status == 201
    path = "/curl-cond/f.txt"
    # create-only: If-None-Match: * on a new name succeeds, on an existing one 412
    assert curl(shared_dav_server, path, "-T", str(one), "-H", "If-None-Match: *",
                tmp=tmp_path).status == 201
    assert curl(shared_dav_server, path, "-T", str(two), "-H", "If-None-Match: *",
                tmp=tmp_path).status == 412
    assert curl(shared_dav_server, path, tmp=tmp_path).body == one.read_bytes()
    etag = curl(shared_dav_server, path, "-I", tmp=tmp_path).headers["etag"]
    # lost-update protection: a stale If-Match is refused and changes nothing
    assert curl(shared_dav_server, path, "-T", str(two), "-H", 'If-Match: "stale"',
                tmp=tmp_path).status == 412
    assert curl(shared_dav_server, path, tmp=tmp_path).body == one.read_bytes()
    updated = curl(shared_dav_server, path, "-T", str(two), "-H", f"If-Match: {etag}",
                   tmp=tmp_path)
    assert updated.status == 204
    after = curl(shared_dav_server, path, tmp=tmp_path)
    assert after.body == two.read_bytes()
    assert after.headers["etag"] != etag


def test_if_modified_since(shared_dav_server: DavServer,
                           uploaded: tuple[str, bytes], tmp_path: Path) -> None:
    path, data = uploaded
    last_modified = curl(shared_dav_server, path, "-I", tmp=tmp_path).headers["last-modified"]
    # RFC 9110 §13.1.3: not modified since the date it reported itself -> 304
    same = curl(shared_dav_server, path, "-H", f"If-Modified-Since: {last_modified}",
                tmp=tmp_path)
    assert same.status == 304, (
        f"GET with If-Modified-Since: {last_modified} (the Last-Modified value) "
        f"answered {same.status}"
    )
    assert same.body == b""
    old = curl(shared_dav_server, path, "-H",
               "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT", tmp=tmp_path)
    assert old.status == 200 and old.body == data
    unmodified = curl(shared_dav_server, path, "-H",
                      "If-Unmodified-Since: Sat, 01 Jan 2000 00:00:00 GMT", tmp=tmp_path)
    assert unmodified.status == 412


def test_delete_then_get_is_404(shared_dav_server: DavServer, tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x")
    assert curl(shared_dav_server, "/curl-del.txt", "-T", str(tmp_path / "x"),
                tmp=tmp_path).status == 201
    assert curl(shared_dav_server, "/curl-del.txt", "-X", "DELETE",
                tmp=tmp_path).status == 204
    assert curl(shared_dav_server, "/curl-del.txt", tmp=tmp_path).status == 404
