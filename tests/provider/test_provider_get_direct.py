"""GET's direct path (provider/get_direct.py) answers exactly as WsgiDAV's GET.

Two servers run in this process on real sockets over one repository: one with
``webdav.get_direct`` off (WsgiDAV's GET, the reference) and one with it on. Every
request below is sent to both and the status, the headers (but ``Date``) and the
body are compared; a small middleware records which path answered, so a case the
direct path should take cannot silently fall back, and one it must leave to WsgiDAV
cannot be taken.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from tests.inprocess_server import PathRecorder, twin_servers
from tests.server_fixtures import DEFAULT_USERS

AUTH = ("alice", DEFAULT_USERS["alice"][0])
BIG = os.urandom(1536 * 1024)  # several chunks (content-defined, about 512 KiB each)
FILES = {
    "big.bin": BIG,
    "notes.txt": b"plain text\n" * 100,
    "empty.dat": b"",
    "photo.JPG": b"\xff\xd8jpeg" * 10,
    "archive.tar.gz": b"\x1f\x8b" * 10,
    "caf\u00e9 (1).pdf": b"%PDF" * 10,
}

#: (name, file, request headers, query); None as file: a folder
CASES: list[tuple[str, str, dict[str, str], str]] = [
    ("whole", "big.bin", {}, ""),
    ("whole text", "notes.txt", {}, ""),
    ("whole empty", "empty.dat", {}, ""),
    ("jpeg", "photo.JPG", {}, ""),
    ("tar.gz", "archive.tar.gz", {}, ""),
    ("unicode name", "caf\u00e9 (1).pdf", {}, ""),
    ("range start", "big.bin", {"Range": "bytes=0-99"}, ""),
    ("range 4 KiB", "big.bin", {"Range": "bytes=700000-704095"}, ""),
    ("range open end", "big.bin", {"Range": "bytes=1500000-"}, ""),
    ("range suffix", "big.bin", {"Range": "bytes=-500"}, ""),
    ("range one byte", "big.bin", {"Range": "bytes=0-0"}, ""),
    ("range last byte", "big.bin", {"Range": f"bytes={len(BIG) - 1}-{len(BIG) - 1}"}, ""),
    ("range past the end", "big.bin", {"Range": f"bytes={len(BIG) - 10}-{len(BIG) + 100}"}, ""),
    ("range across chunks", "big.bin", {"Range": "bytes=400000-1200000"}, ""),
    ("range whole file", "big.bin", {"Range": "bytes=0-"}, ""),
    ("range with spaces", "notes.txt", {"Range": "bytes = 5 - 9"}, ""),
    ("range two (whole file)", "big.bin", {"Range": "bytes=0-1,5-6"}, ""),
    ("range overlapping (whole file)", "big.bin", {"Range": "bytes=0-10,5-20"}, ""),
    ("range unsatisfiable", "big.bin", {"Range": "bytes=99999999-"}, ""),
    ("range backwards", "big.bin", {"Range": "bytes=9-5"}, ""),
    ("range malformed", "big.bin", {"Range": "bytes=abc"}, ""),
    ("range other unit", "big.bin", {"Range": "items=0-5"}, ""),
    ("range suffix zero", "big.bin", {"Range": "bytes=-0"}, ""),
    ("range on empty", "empty.dat", {"Range": "bytes=0-5"}, ""),
    ("If-None-Match", "notes.txt", {"If-None-Match": '"nope"'}, ""),
    ("If-Modified-Since", "notes.txt", {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}, ""),
    ("If-Range", "big.bin", {"Range": "bytes=0-9", "If-Range": '"nope"'}, ""),
    ("Depth", "notes.txt", {"Depth": "0"}, ""),
    ("query", "notes.txt", {}, "x=1"),
    ("folder", "sub", {}, ""),
    ("missing", "nope.txt", {}, ""),
    ("history", "/.history", {}, ""),
]
GENERIC_CASES = {"range suffix zero", "range unsatisfiable", "range on empty", "If-None-Match",
                 "If-Modified-Since", "If-Range", "Depth", "query", "folder", "missing", "history"}


def populate(url: str) -> None:
    with requests.Session() as s:
        s.auth = AUTH
        assert s.request("MKCOL", url + "/f/").status_code == 201
        assert s.request("MKCOL", url + "/f/sub/").status_code == 201
        for name, data in FILES.items():
            assert s.put(url + "/f/" + quote(name), data=data).status_code == 201


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, PathRecorder]]:
    work = tmp_path_factory.mktemp("get-direct")
    with twin_servers(work, "get_direct", "GET", "davbackup.get", populate) as twins:
        yield twins.generic_url, twins.direct_url, twins.recorder


def comparable(response: requests.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(k.lower(), v) for k, v in response.raw.headers.items() if k.lower() != "date"]
    body = re.sub(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", b"<time>", response.content)
    return response.status_code, headers, body


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_direct_path_answers_as_wsgidav(servers: tuple[str, str, PathRecorder],
                                        case: tuple[str, str, dict[str, str], str]) -> None:
    generic_url, direct_url, recorder = servers
    name, target, headers, query = case
    path = target if target.startswith("/") else "/f/" + quote(target)
    suffix = f"?{query}" if query else ""
    reference = requests.get(generic_url + path + suffix, headers=headers, auth=AUTH, timeout=60)
    del recorder.seen[:]
    answer = requests.get(direct_url + path + suffix, headers=headers, auth=AUTH, timeout=60)
    assert comparable(answer) == comparable(reference), name
    if name in GENERIC_CASES:  # (a folder is redirected to its "/" first)
        assert recorder.seen and set(recorder.seen) == {None}, name
    else:
        assert recorder.seen == ["direct"], name
    if name == "range 4 KiB":
        assert answer.status_code == 206 and answer.content == BIG[700000:704096]


def test_parallel_ranged_reads(servers: tuple[str, str, PathRecorder]) -> None:
    """Many ranged reads at once, each checked against the file."""
    _generic_url, direct_url, _recorder = servers
    errors: list[str] = []

    def worker(seed: int) -> None:
        with requests.Session() as s:
            s.auth = AUTH
            for i in range(20):
                start = (seed * 7919 + i * 104729) % (len(BIG) - 4096)
                got = s.get(direct_url + "/f/big.bin", headers={"Range": f"bytes={start}-{start + 4095}"})
                if got.status_code != 206 or got.content != BIG[start:start + 4096]:
                    errors.append(f"{start}: {got.status_code}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
