"""The private members of WsgiDAV and cheroot that davbackup relies on (provider/internals.py).

If an upgrade of WsgiDAV or cheroot removes or changes one, these tests fail with the
member's name, and so does the server at start (``internals.verify()``).
"""

from __future__ import annotations

import importlib.metadata
import io
import re
import socket
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cheroot.makefile import StreamReader
from cheroot.server import ChunkedRFile, KnownLengthRFile

from provider import internals

ROOT = Path(__file__).resolve().parents[2]


def test_every_private_member_is_still_there():
    assert list(internals.problems()) == []
    internals.verify()


def test_a_missing_member_fails_loudly():
    class Upgraded:  # what a future cheroot without _fetch would look like
        def __init__(self) -> None:
            self.rfile = None

    found = list(internals.problems(((Upgraded, "_fetch", ()),), ((Upgraded, "buffer"),)))
    assert any("Upgraded._fetch is gone" in line for line in found)
    assert any("no longer sets self.buffer" in line for line in found)

    class Changed:
        def _evaluate_if_headers(self, environ):  # one parameter fewer
            pass

    found = list(internals.problems(((Changed, "_evaluate_if_headers", ("res", "environ")),), ()))
    assert len(found) == 1 and "_evaluate_if_headers" in found[0]


def test_no_private_member_is_used_outside_internals():
    """Calls of the wrapped private members go through provider/internals.py; overrides
    (``def _name`` and their ``super()._name``) are listed in ``internals.OVERRIDES``."""
    names = {name for _cls, name, _params in internals.CALLED + internals.OVERRIDES}
    names |= {name for _cls, name in internals.ATTRIBUTES if name.startswith("_")}
    overridden = {name for _cls, name, _params in internals.OVERRIDES}
    offenders = []
    for path in sorted((ROOT / "provider").rglob("*.py")):
        if path.name == "internals.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in names:
                for match in re.finditer(rf"(\w+(?:\(\))?)\.{name}\b", line):
                    if match.group(1) == "super()" and name in overridden:
                        continue
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
        text = path.read_text(encoding="utf-8")
        assert "wsgidav.dir_browser._dir_browser" not in text, path
    assert offenders == []


def _pinned(package: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in project["dependencies"]:
        match = re.fullmatch(rf"{package}>=([\d.]+),<([\d.]+)", requirement)
        if match:
            return tuple(map(int, match.group(1).split("."))), tuple(map(int, match.group(2).split(".")))
    raise AssertionError(f"{package} has no >=X,<Y pin in pyproject.toml")


@pytest.mark.parametrize("package", ["wsgidav", "cheroot"])
def test_installed_versions_are_the_pinned_ones(package):
    low, high = _pinned(package)
    installed = tuple(int(p) for p in re.findall(r"\d+", importlib.metadata.version(package))[:3])
    assert low <= installed < high, (package, installed, low, high)


def test_read_one_chunk_on_a_real_chunked_body():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
        rfile = right.makefile("rb")
        body = ChunkedRFile(rfile, maxlen=1 << 20)
        assert internals.chunked_source(body) is body
        assert internals.read_one_chunk(body, 3) == b"hel"
        assert internals.read_one_chunk(body, -1) == b"lo"  # never more than the current chunk
        assert internals.read_one_chunk(body, None) == b"abc"
        assert internals.read_one_chunk(body, 10) == b""
        assert internals.connection_socket(body) is right


@contextmanager
def known_length_body(body: bytes) -> Iterator[tuple[Any, KnownLengthRFile, Any, StreamReader]]:
    """A PUT's body as the direct path reads it: guarded(tracked(cheroot's rfile)), with
    the request head already read and a pipelined ``NEXT`` after the body; yields
    (stream, rfile, tracker, reader) and joins the sender at the end."""
    from provider.request_log import _TrackedInput
    from provider.request_server import guarded_input

    left, right = socket.socketpair()
    with left, right:
        sender = threading.Thread(target=left.sendall, args=(b"PUT / HTTP/1.1\r\n\r\n" + body + b"NEXT",))
        sender.start()
        reader = StreamReader(right)
        assert reader.readline() == b"PUT / HTTP/1.1\r\n" and reader.readline() == b"\r\n"
        raw = KnownLengthRFile(reader, len(body))
        tracked = _TrackedInput(raw, len(body))
        try:
            yield guarded_input(tracked), raw, tracked, reader
        finally:
            sender.join()


BODY = bytes(range(256)) * (12 * 1024 + 7)  # 3 MiB and a bit


def test_read_block_reads_a_known_length_body_exactly():
    """What the reader buffered with the header first, then the socket; the bytes after
    the body (a pipelined request) stay for the next request; the counts are kept."""
    with known_length_body(BODY) as (stream, raw, tracked, reader):
        blocks = []
        while block := stream.read_block(1 << 20):
            assert isinstance(block, bytearray)  # handed over: the caller owns it
            blocks.append(block)
        assert b"".join(blocks) == BODY and [len(b) for b in blocks[:3]] == [1 << 20] * 3
        assert raw.remaining == 0 and tracked.exhausted
        assert reader.bytes_read >= len(BODY)
        assert reader.read(4) == b"NEXT"


def test_read_into_fills_views_from_a_known_length_body():
    """As read_block, into the caller's buffers: full views until the body ends."""
    with known_length_body(BODY) as (stream, raw, tracked, reader):
        buf = bytearray(1 << 20 | 5)
        pieces = []
        with memoryview(buf) as view:
            while got := internals.read_into(stream, view[5:]):
                pieces.append(bytes(buf[5 : 5 + got]))
        assert b"".join(pieces) == BODY and [len(p) for p in pieces[:3]] == [1 << 20] * 3
        assert raw.remaining == 0 and tracked.exhausted
        assert reader.read(4) == b"NEXT"
    other = io.BytesIO(b"abcdefg")  # any other stream: read and copied in
    buf = bytearray(4)
    assert internals.read_into(other, memoryview(buf)) == 4 and buf == b"abcd"
    assert internals.read_into(other, memoryview(buf)) == 3 and buf[:3] == b"efg"
    assert internals.read_into(other, memoryview(buf)) == 0


def test_read_block_of_a_body_cut_short():
    left, right = socket.socketpair()
    with right:
        with left:
            left.sendall(b"abc")
        raw = KnownLengthRFile(StreamReader(right), 10)
        assert internals.read_block(raw, 4) == b"abc"
        assert internals.read_block(raw, 4) == b""
        assert raw.remaining == 7  # the caller sees 3 of 10 announced bytes


def test_chunked_source_looks_through_wrappers():
    class Wrapper:
        def __init__(self, stream: object) -> None:
            self._stream = stream

        def __getattr__(self, name: str) -> object:
            return getattr(self._stream, name)

    left, right = socket.socketpair()
    with left, right:
        body = ChunkedRFile(right.makefile("rb"), maxlen=1 << 20)
        assert internals.chunked_source(Wrapper(Wrapper(body))) is body
        assert internals.chunked_source(Wrapper(right.makefile("rb"))) is None


@pytest.mark.parametrize(("url", "expected"), [
    ("http://h:8080/a;b.txt", ("http", "h:8080", "/a;b.txt")),
    ("https://h/d;1/what?.txt", ("https", "h", "/d;1/what?.txt")),
    ("/x/a b#c;d", ("", "", "/x/a b#c;d")),
    ("//h/p", ("", "h", "/p")),
])
def test_decoded_destination_keeps_every_character_of_the_path(url: str, expected: tuple[str, str, str]) -> None:
    parsed = internals.parse_unquoted_destination(url, allow_fragments=False)
    assert (parsed.scheme, parsed.netloc, parsed.path) == expected
    assert (parsed.params, parsed.query, parsed.fragment) == ("", "", "")


@pytest.mark.parametrize("storage_kind", ["repository", "wsgidav"])
@pytest.mark.parametrize("other_lock", [False, True])
def test_begin_write_is_wsgidavs_write_transaction(tmp_path: Path, storage_kind: str, other_lock: bool):
    """begin_write marks the URL as WsgiDAV's _begin_write_transaction does (no LOCK is
    granted on it until end_write), with no lock held anywhere (the shortcut) or some,
    over davbackup's lock storage or WsgiDAV's, and refuses with 423 when a lock whose
    token the request did not submit covers it."""
    from wsgidav.dav_error import HTTP_LOCKED, DAVError
    from wsgidav.lock_man.lock_manager import LockManager
    from wsgidav.lock_man.lock_storage import LockStorageDict

    from provider.locks import RepositoryLockStorage
    from tests.core_fixtures import init_repo

    repo = init_repo(tmp_path / "repo")
    try:
        manager = LockManager(RepositoryLockStorage(repo) if storage_kind == "repository" else LockStorageDict())
        lock = {"lock_type": "write", "lock_scope": "exclusive", "lock_owner": b"<o/>", "timeout": 60,
                "token_list": []}
        if other_lock:  # a lock elsewhere: the full check runs, and finds no conflict here
            manager.acquire(url="/alice/elsewhere", lock_depth="0", principal="alice", **lock)
        marked = internals.begin_write(manager, "/alice/a/b.txt", "alice")
        assert marked == "/alice/a/b.txt" and manager._active_writes == {"/alice/a/b.txt": 1}
        with pytest.raises(DAVError) as refused:
            manager.acquire(url="/alice/a/b.txt", lock_depth="0", principal="alice", **lock)
        assert refused.value.value == HTTP_LOCKED
        internals.end_write(manager, marked)
        assert manager._active_writes == {}
        manager.acquire(url="/alice/a", lock_depth="infinity", principal="alice", **lock)
        with pytest.raises(DAVError) as refused:
            internals.begin_write(manager, "/alice/a/b.txt", "alice")
        assert refused.value.value == HTTP_LOCKED and manager._active_writes == {}
    finally:
        repo.close()
