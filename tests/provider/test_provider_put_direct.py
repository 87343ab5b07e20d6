"""PUT's direct path (provider/put_direct.py) answers exactly as WsgiDAV's PUT.

Two servers run in this process on real sockets over one repository: one with
``webdav.put_direct`` off (WsgiDAV's PUT, the reference) and one with it on. Every PUT
variant below is sent byte for byte to both, into twin folders (``/g`` on the
reference, ``/d`` on the direct one, each set up the same way), and the status, the
headers (but ``Date``), the body (but the time WsgiDAV's status page carries) and
what was stored (size, ETag, content, modification time, checksums) are compared.
A small middleware records which path answered, so a case the direct path should
take cannot silently fall back, and one it must leave to WsgiDAV cannot be taken.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests

from davbackup.repository import Repository
from tests.inprocess_server import PathRecorder, twin_servers
from tests.server_fixtures import DEFAULT_USERS

DIRECT, GENERIC = "direct", "generic"
BODY = bytes(range(256)) * 16  # 4 KiB
LOCK_BODY = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope>'
             "<D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
             "<D:owner>test</D:owner></D:lockinfo>")


@dataclass
class Variant:
    """One PUT: what is set up first (in the twin folder), the request, who answers."""

    name: str
    target: str  # below the twin folder
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = BODY
    chunked: bool = False  # send the body with Transfer-Encoding: chunked
    truncate: int | None = None  # send only this many bytes, then close the sending side
    user: str = "alice"
    password: str | None = None
    setup: Callable[[requests.Session, str], None] | None = None
    path: str | None = DIRECT  # which path must answer (None: none of the two, e.g. 401)
    in_folder: bool = True  # below a twin folder of its own (else: the same path on both)


def _existing(s: requests.Session, base: str) -> None:
    assert s.put(base + "/old.bin", data=b"old content").status_code == 201


def _folder(s: requests.Session, base: str) -> None:
    assert s.request("MKCOL", base + "/dir/").status_code == 201


def _lock(target: str, depth: str) -> Callable[[requests.Session, str], None]:
    def setup(s: requests.Session, base: str) -> None:
        if target.endswith("/") and target != "/":
            s.request("MKCOL", base + target)
        elif target != "/":
            assert s.put(base + target, data=b"locked").status_code == 201
        answer = s.request("LOCK", base + target.rstrip("/") + ("/" if target.endswith("/") else ""),
                           data=LOCK_BODY, headers={"Depth": depth, "Timeout": "Second-3600"})
        assert answer.status_code == 200, answer.text
    return setup


def _session(s: requests.Session, base: str) -> None:
    """An unfinished range-PUT upload of the target (a whole PUT must drop it)."""
    answer = s.put(base + "/resumed.bin", data=b"x" * 10, headers={"Content-Range": "bytes 0-9/100"})
    assert answer.status_code == 308


SHA1 = hashlib.sha1(BODY).hexdigest()
SHA256 = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
#: over davbackup.body_segments.SEGMENT_BYTES: read straight into the chunker's segments
LARGE = random.Random(12).randbytes(9 * 1024 * 1024 + 123)
LARGE_SHA1 = hashlib.sha1(LARGE).hexdigest()

VARIANTS = [
    Variant("new file", "/new.bin"),
    Variant("replace", "/old.bin", setup=_existing),
    Variant("empty body", "/empty.bin", body=b""),
    Variant("100-continue", "/expect.bin", headers={"Expect": "100-continue"}),
    Variant("chunked", "/chunked.bin", chunked=True),
    Variant("chunked, expected length", "/finder.bin", chunked=True,
            headers={"X-Expected-Entity-Length": str(len(BODY))}),
    Variant("chunked, expected length not met", "/finder-short.bin", chunked=True,
            headers={"X-Expected-Entity-Length": str(len(BODY) + 1)}),
    Variant("body shorter than Content-Length", "/short.bin", truncate=1000),
    Variant("large body", "/large.bin", body=LARGE),
    Variant("large body shorter than Content-Length", "/large-short.bin", body=LARGE, truncate=5 * 1024 * 1024 + 17),
    Variant("large body, OC-Checksum", "/large-sum.bin", body=LARGE, headers={"OC-Checksum": f"SHA1:{LARGE_SHA1}"}),
    Variant("large body, chunked, expected length", "/large-finder.bin", body=LARGE, chunked=True,
            headers={"X-Expected-Entity-Length": str(len(LARGE))}),
    Variant("X-OC-Mtime", "/mtime.bin", headers={"X-OC-Mtime": "1000000000"}),
    Variant("X-OC-Mtime replacing", "/old.bin", headers={"X-OC-Mtime": "1234567890"}, setup=_existing),
    Variant("X-OC-Mtime not a number", "/bad-mtime.bin", headers={"X-OC-Mtime": "soon"}, path=None),
    Variant("X-OC-Mtime too late", "/late-mtime.bin", headers={"X-OC-Mtime": "999999999999"}, path=None),
    Variant("OC-Checksum", "/sum.bin", headers={"OC-Checksum": f"SHA1:{SHA1}"}),
    Variant("OC-Checksum wrong", "/badsum.bin", headers={"OC-Checksum": "SHA1:" + "0" * 40}),
    Variant("OC-Checksum malformed", "/oddsum.bin", headers={"OC-Checksum": "SHA1:xyz"}, path=GENERIC),
    Variant("Repr-Digest", "/digest.bin", headers={"Repr-Digest": f"sha-256=:{SHA256}:"}),
    Variant("Content-Type", "/typed.txt", headers={"Content-Type": "text/plain"}),
    Variant("name with spaces and Unicode", "/caf%C3%A9%20cr%C3%A8me%20(1).txt"),
    Variant("OS metadata (stored)", "/.DS_Store"),
    Variant("parent missing", "/nowhere/new.bin", path=GENERIC),
    Variant("parent is a file", "/old.bin/new.bin", setup=_existing, path=GENERIC),
    Variant("target is a folder", "/dir", setup=_folder, path=GENERIC),
    Variant("trailing slash", "/slash.bin/", path=GENERIC),
    Variant("target locked", "/locked.bin", setup=_lock("/locked.bin", "0"), path=GENERIC),
    Variant("parent locked, depth 0", "/ldir/new.bin", setup=_lock("/ldir/", "0"), path=GENERIC),
    Variant("parent locked, depth infinity", "/ldir/new.bin", setup=_lock("/ldir/", "infinity"), path=GENERIC),
    Variant("sibling locked", "/free.bin", setup=_lock("/other.bin", "0")),
    Variant("If-Match", "/old.bin", headers={"If-Match": '"nope"'}, setup=_existing, path=GENERIC),
    Variant("If-None-Match", "/old.bin", headers={"If-None-Match": "*"}, setup=_existing, path=GENERIC),
    Variant("If-None-Match, new", "/inm.bin", headers={"If-None-Match": "*"}, path=GENERIC),
    Variant("Content-Encoding", "/gz.bin", headers={"Content-Encoding": "gzip"}, path=GENERIC),
    Variant("Content-Range", "/range.bin", headers={"Content-Range": f"bytes 0-{len(BODY) - 1}/{len(BODY)}"},
            path=None),
    Variant("supersedes an upload session", "/resumed.bin", setup=_session),
    Variant("wrong password", "/nopass.bin", password="wrong", path=None),
    Variant("read-only user", "/ro.bin", user="reader", path=None, in_folder=False),
    Variant("history", "/.history/x.bin", path=None, in_folder=False),
    Variant("over quota", "/big.bin", user="bob", body=b"q" * 50_000, path=GENERIC),
    Variant("control character in name", "/bad%01name.bin", path=None),
]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(url: str, variant: Variant, path: str) -> Answer:
    """Send the variant's PUT of ``path`` byte for byte; the parsed answer."""
    parts = urlsplit(url)
    user = variant.user
    password = variant.password or DEFAULT_USERS[user][0]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    lines = [f"PUT {path} HTTP/1.1", f"Host: {parts.netloc}", f"Authorization: Basic {token}",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in variant.headers.items()]
    body = variant.body
    if variant.chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                           for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body if variant.truncate is None else body[: variant.truncate]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        if "Expect" in variant.headers:
            sock.sendall(head)
            interim = sock.recv(65536)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            sock.sendall(payload)
        else:
            sock.sendall(head + payload)
        if variant.truncate is not None:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"duplicate header {name}"
        headers[name.lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, content)


_PAGE_TIME = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?")


def comparable(answer: Answer, prefix: str) -> tuple[int, dict[str, str], bytes]:
    """The answer without what differs between two runs: the date, the twin folder."""
    headers = {k: v for k, v in answer.headers.items() if k not in ("date", "content-length")}
    body = _PAGE_TIME.sub(b"<time>", answer.body)
    if prefix:
        body = body.replace(prefix.encode(), b"/twin")
    return answer.status, headers, body


def stored(repo: Repository, user: str, path: str) -> tuple[Any, ...] | None:
    """What the catalog holds at ``path``: kind, size, ETag, times, checksums, content."""
    ns = repo.namespace(user)
    entry = ns.lookup(path)
    if entry is None:
        return None
    if entry.is_dir:
        return ("dir",)
    with ns.open_read(path) as reader:
        content = reader.read()
    return (entry.size, entry.etag, entry.checksums, content,
            entry.modified if entry.modified < 1.5e9 else "now")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, PathRecorder, Repository]]:
    with twin_servers(tmp_path_factory.mktemp("put-direct"), "put_direct", "PUT", "davbackup.put") as twins:
        yield twins.generic_url, twins.direct_url, twins.recorder, twins.repo


@pytest.fixture(scope="module")
def twins(servers: tuple[str, str, PathRecorder, Repository]) -> dict[str, str]:
    """The twin folders of every user, and bob's quota (room for 10,000 more bytes)."""
    generic_url, _direct_url, _recorder, repo = servers
    for user in ("alice", "bob"):
        with requests.Session() as s:
            s.auth = (user, DEFAULT_USERS[user][0])
            for prefix in ("/g", "/d"):
                assert s.request("MKCOL", generic_url + prefix + "/").status_code == 201
    used, _quota = repo.users.usage("bob")
    repo.users.set_quota("bob", used + 10_000)
    return {"generic": "/g", "direct": "/d"}


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_direct_path_answers_as_wsgidav(servers: tuple[str, str, PathRecorder, Repository],
                                        twins: dict[str, str], variant: Variant) -> None:
    generic_url, direct_url, recorder, repo = servers
    answers, results = [], []
    for url, prefix in ((generic_url, "/g"), (direct_url, "/d")):
        folder = f"{prefix}/{re.sub(r'[^a-z0-9]+', '-', variant.name)}" if variant.in_folder else ""
        with requests.Session() as s:
            s.auth = (variant.user, DEFAULT_USERS[variant.user][0])
            if folder:
                assert s.request("MKCOL", url + folder + "/").status_code == 201
            if variant.setup is not None:  # through the server asked: each keeps its own copy of the locks
                variant.setup(s, url + folder)
        del recorder.seen[:]
        answer = exchange(url, variant, folder + variant.target)
        answers.append(comparable(answer, folder))
        target = folder + variant.target
        results.append(stored(repo, variant.user, unquote(target)) if "%01" not in target
                       and ".history" not in target else None)
    assert answers[1] == answers[0], variant.name
    assert results[1] == results[0], variant.name
    if answers[0][0] in (201, 204):
        assert results[0] is not None and results[0][3] == variant.body, variant.name
    expected = [] if variant.path is None and not recorder.seen else [variant.path]
    if variant.path is None:
        assert recorder.seen in ([], [None]), recorder.seen
    else:
        assert recorder.seen == expected, f"{variant.name}: answered by {recorder.seen}"


def test_whole_put_drops_the_upload_session(servers: tuple[str, str, PathRecorder, Repository],
                                            twins: dict[str, str]) -> None:
    _generic_url, direct_url, recorder, _repo = servers
    with requests.Session() as s:
        s.auth = ("alice", DEFAULT_USERS["alice"][0])
        url = direct_url + "/d/session.bin"
        assert s.put(url, data=b"x" * 10, headers={"Content-Range": "bytes 0-9/100"}).status_code == 308
        del recorder.seen[:]
        assert s.put(url, data=b"whole").status_code == 201
        assert recorder.seen == [DIRECT]
        query = s.put(url, headers={"Content-Range": "bytes */100"})
        assert query.status_code == 308 and query.headers["Upload-Offset"] == "0"


def test_a_lock_taken_during_the_body_waits(servers: tuple[str, str, PathRecorder, Repository],
                                            twins: dict[str, str]) -> None:
    """While a direct PUT receives its body, a LOCK of its target by another user's
    request is refused (the lock manager's write transaction, as in WsgiDAV's PUT)."""
    _generic_url, direct_url, recorder, _repo = servers
    parts = urlsplit(direct_url)
    token = base64.b64encode(f"alice:{DEFAULT_USERS['alice'][0]}".encode()).decode()
    head = (f"PUT /d/slow.bin HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Basic {token}\r\n"
            f"Content-Length: 8\r\nConnection: close\r\n\r\nhalf").encode()
    del recorder.seen[:]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head)
        lock_manager = _lock_manager(recorder.app)
        deadline = time.monotonic() + 20
        while not lock_manager._active_writes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lock_manager._active_writes, "the PUT never began to write"
        with requests.Session() as s:
            s.auth = ("alice", DEFAULT_USERS["alice"][0])
            locked = s.request("LOCK", direct_url + "/d/slow.bin", data=LOCK_BODY,
                               headers={"Depth": "0", "Timeout": "Second-60"})
            assert locked.status_code == 423, locked.text
        sock.sendall(b"done")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 201"), data[:200]
    assert recorder.seen[-1] == DIRECT


def _lock_manager(app: Any) -> Any:
    """WsgiDAV's lock manager inside the middleware around it."""
    for _ in range(10):
        if hasattr(app, "lock_manager"):
            return app.lock_manager
        app = app.app
    raise AssertionError("no WsgiDAV application found")


def test_status_page_is_wsgidavs_page_with_the_time_of_now():
    """The 201 page put_direct answers with is WsgiDAV's (util.send_status_response),
    byte for byte but the time it carries, which is the current one."""
    import datetime

    from wsgidav.dav_error import HTTP_CREATED, DAVError

    from provider.header_text import StatusPage

    page = StatusPage(HTTP_CREATED)
    before = datetime.datetime.now()
    body = page.body()
    after = datetime.datetime.now()
    content_type, wsgidav_body = DAVError(HTTP_CREATED).get_response_page()
    assert content_type == page.content_type
    time_text = re.compile(rb"- (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?)\n</body>")
    ours, theirs = time_text.search(body), time_text.search(wsgidav_body)
    assert ours is not None and theirs is not None
    assert time_text.sub(b"", body) == time_text.sub(b"", wsgidav_body)
    assert before <= datetime.datetime.fromisoformat(ours.group(1).decode()) <= after
