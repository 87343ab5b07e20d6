"""Upload sessions: the state machine, resume with persisted tails, and refusals."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from davbackup import clock
from davbackup.errors import Conflict, Locked, NotFound, RangeError, TooLarge, TooManyUploads, UsageError
from davbackup.maintenance.gc import collect_garbage
from davbackup.repository import Repository
from davbackup.digests import Digests
from davbackup.errors import DigestMismatch, LengthMismatch, OffsetMismatch
from davbackup.upload_settings import UploadSettings, load_settings
from davbackup.upload_sessions import EVENTS, STATES, TRANSITIONS, transition

MiB = 1024 * 1024


# Every test here runs on SQLite and on PostgreSQL (tests/conftest.py).
CATALOG_BACKENDS = ("sqlite", "postgresql")


@pytest.fixture()
def repo(tmp_path: Path, catalog_url: str | None):
    r = Repository.init(tmp_path / "repo", "pass", catalog_url=catalog_url)
    r.users.add("alice", "password1")
    r.users.add("bob", "password2")
    yield r
    r.close()


class BreakingBody(io.BytesIO):
    """A request body whose connection drops after ``cut`` bytes."""

    def __init__(self, data: bytes, cut: int) -> None:
        super().__init__(data)
        self.cut = cut
        self.sent = 0

    def read(self, n: int = -1) -> bytes:
        if self.sent >= self.cut:
            raise ConnectionResetError("peer went away")
        chunk = super().read(min(n if n >= 0 else self.cut, self.cut - self.sent))
        self.sent += len(chunk)
        return chunk


HOUR = 3600.0


@pytest.fixture()
def shifted_clock() -> Iterator[None]:
    yield
    clock.set_offset(0)


def test_transition_table():
    """The life cycle as written in DESIGN.md §13, pair by pair (not the table against itself)."""
    expected = {
        ("none", "create"): "receiving",
        ("receiving", "append"): "receiving",
        ("receiving", "complete"): "none",
        ("receiving", "cancel"): "none",
        ("receiving", "expire"): "none",
    }
    assert TRANSITIONS == expected
    for state, event in itertools.product(STATES, EVENTS):
        if (state, event) in expected:
            assert transition(state, event) == expected[(state, event)]
        elif state == "none":  # an event on a session that is gone: the client's URL is stale
            with pytest.raises(NotFound):
                transition(state, event)
        else:
            with pytest.raises(Conflict):
                transition(state, event)
    with pytest.raises(Conflict):
        transition("receiving", "resume")


def test_no_event_after_completion(repo: Repository):
    up = repo.uploads
    session = up.create("alice", "/done", "ietf", 4)
    assert up.append(session, 0, io.BytesIO(b"data"), 4, allow_overlap=False, complete=True).entry is not None
    with pytest.raises(NotFound):
        up.append(session, 4, io.BytesIO(b"more"), 4, allow_overlap=False)
    with pytest.raises(NotFound):
        up.cancel(session)
    with pytest.raises(NotFound):
        up.set_total(session, 8)
    with pytest.raises(NotFound):
        up.get(session.id, "alice")
    assert repo.namespace("alice").open_read("/done").read() == b"data"


def test_no_event_after_cancel(repo: Repository):
    up = repo.uploads
    session = up.create("alice", "/c1", "range", 10)
    up.append(session, 0, io.BytesIO(b"12345"), 5, allow_overlap=True)
    up.cancel(session)
    with pytest.raises(NotFound):
        up.cancel(session)
    with pytest.raises(NotFound):
        up.append(session, 5, io.BytesIO(b"67890"), 5, allow_overlap=True)
    assert repo.namespace("alice").lookup("/c1") is None
    assert repo.catalog.reader().execute("SELECT count(*) FROM session_chunks").fetchone()[0] == 0


def test_cancel_while_appending_fails_the_append(repo: Repository):
    """A session removed under a running request (user removal, gc expiry, a DELETE
    of the upload resource) is not resurrected by the request's checkpoint."""
    up = repo.uploads
    session = up.create("alice", "/racing", "range", 4 * MiB)
    reading = threading.Event()
    proceed = threading.Event()

    class SlowBody(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            reading.set()
            proceed.wait(10)
            return super().read(n)

    errors: list[BaseException] = []

    def appender() -> None:
        try:
            up.append(session, 0, SlowBody(b"x" * MiB), MiB, allow_overlap=True)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    t = threading.Thread(target=appender)
    t.start()
    assert reading.wait(10)
    repo.users.remove("bob")  # another user's removal leaves it alone
    assert up.get(session.id, "alice").received == 0
    # expiry by gc with the clock 25 h ahead (the default lifetime is 24 h)
    clock.set_offset(25 * HOUR)
    try:
        assert collect_garbage(repo).sessions_expired == 1
    finally:
        clock.set_offset(0)
    proceed.set()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], NotFound)
    assert repo.catalog.reader().execute("SELECT count(*) FROM upload_sessions").fetchone()[0] == 0


def test_interrupted_part_keeps_every_received_byte_and_old_version(repo: Repository):
    ns = repo.namespace("alice")
    ns.create_empty("/f")
    pending = ns.open_write("/f")
    pending.write(b"previous")
    pending.commit()
    data = os.urandom(12 * MiB)
    up = repo.uploads
    session = up.create("alice", "/f", "range", len(data))
    result = up.append(session, 0, BreakingBody(data, 5 * MiB + 12345), len(data), allow_overlap=True)
    assert result.interrupted and result.entry is None
    assert result.offset == 5 * MiB + 12345  # the tail after the last chunk is kept too
    assert ns.open_read("/f").read() == b"previous"


def test_session_survives_reopen_and_completes(tmp_path: Path):
    data = os.urandom(9 * MiB + 7)
    repo = Repository.init(tmp_path / "own", "pass")
    repo.users.add("alice", "password1")
    up = repo.uploads
    session = up.create("alice", "/big", "range", len(data))
    first = up.append(session, 0, io.BytesIO(data[: 4 * MiB + 3]), 4 * MiB + 3, allow_overlap=True)
    assert first.offset == 4 * MiB + 3
    repo.close()
    reopened = Repository.open(tmp_path / "own", "pass")
    try:
        again = reopened.uploads.find("alice", "/big", "range")
        assert again is not None and again.received == first.offset
        # overlap: the client resends from 1 MiB; the held part is skipped
        rest = reopened.uploads.append(again, MiB, io.BytesIO(data[MiB:]), len(data) - MiB, allow_overlap=True)
        assert rest.entry is not None and rest.entry.size == len(data)
        assert reopened.namespace("alice").open_read("/big").read() == data
        assert reopened.uploads.find("alice", "/big", "range") is None
    finally:
        reopened.close()


def test_resumed_upload_chunks_like_an_uninterrupted_one(repo: Repository):
    data = os.urandom(20 * MiB)
    ns = repo.namespace("alice")
    whole = ns.open_write("/whole")
    whole.write(data)
    whole.commit()
    up = repo.uploads
    session = up.create("alice", "/parts", "range", len(data))
    offset = 0
    for cut in (3 * MiB + 1, 7 * MiB + 77, 15 * MiB):
        offset = up.append(session, offset, io.BytesIO(data[offset:cut]), cut - offset, allow_overlap=True).offset
    done = up.append(session, offset, io.BytesIO(data[offset:]), len(data) - offset, allow_overlap=True)
    assert done.entry is not None
    conn = repo.catalog.reader()

    def chunk_list(path: str) -> list[tuple[int, int, bytes]]:
        node = repo.tree.resolve(conn, ns.root_id, [path.strip("/")])
        assert node is not None and node.version_id is not None
        return conn.execute(
            "SELECT offset, length, chunk_id FROM version_chunks WHERE version_id=? ORDER BY offset",
            (node.version_id,),
        ).fetchall()

    # part boundaries (and stored tails) leave the content-defined cuts unchanged
    assert chunk_list("/parts") == chunk_list("/whole")
    assert len(chunk_list("/whole")) > 5
    assert ns.stat("/parts").etag == ns.stat("/whole").etag


def test_gap_and_exact_offset_rules(repo: Repository):
    up = repo.uploads
    session = up.create("alice", "/g", "ietf", None)
    up.append(session, 0, io.BytesIO(b"a" * 1000), 1000, allow_overlap=False)
    with pytest.raises(OffsetMismatch) as gap:
        up.append(session, 1500, io.BytesIO(b"b"), 1, allow_overlap=True)
    assert gap.value.offset == 1000 and gap.value.http_status == 409
    with pytest.raises(OffsetMismatch) as overlap:
        up.append(session, 500, io.BytesIO(b"b"), 1, allow_overlap=False)
    assert overlap.value.offset == 1000
    assert up.get(session.id, "alice").received == 1000
    done = up.append(session, 1000, io.BytesIO(b"z" * 10), 10, allow_overlap=False, complete=True)
    assert done.entry is not None and done.entry.size == 1010


def test_body_past_total_is_refused_without_change(repo: Repository):
    up = repo.uploads
    session = up.create("alice", "/t", "range", 100)
    with pytest.raises(LengthMismatch):
        up.append(session, 0, io.BytesIO(b"x" * 200), 200, allow_overlap=True)
    assert up.get(session.id, "alice").received == 0


def test_digest_mismatch_keeps_old_version(repo: Repository):
    ns = repo.namespace("alice")
    old = ns.open_write("/d")
    old.write(b"old content")
    old.commit()
    data = os.urandom(3 * MiB)
    up = repo.uploads
    session = up.create("alice", "/d", "range", len(data))
    with pytest.raises(DigestMismatch):
        up.append(session, 0, io.BytesIO(data), len(data), allow_overlap=True,
                  digests=Digests(sha256=hashlib.sha256(b"something else").digest()))
    assert ns.open_read("/d").read() == b"old content"
    session = up.create("alice", "/d", "range", len(data))
    ok = up.append(session, 0, io.BytesIO(data), len(data), allow_overlap=True,
                   digests=Digests(sha256=hashlib.sha256(data).digest(), sha1=hashlib.sha1(data).digest()))
    assert ok.entry is not None
    assert ns.open_read("/d").read() == data


def test_expired_session_is_gone(repo: Repository, shifted_clock: None):
    up = repo.uploads
    session = up.create("alice", "/e", "range", 10)
    up.append(session, 0, io.BytesIO(b"12345"), 5, allow_overlap=True)
    clock.set_offset(24 * HOUR + 60)
    with pytest.raises(NotFound):
        up.get(session.id, "alice")
    assert up.find("alice", "/e", "range") is None
    with pytest.raises(NotFound):
        up.append(session, 5, io.BytesIO(b"67890"), 5, allow_overlap=True)


def test_settings_are_recorded_once_for_every_process(tmp_path: Path, shifted_clock: None):
    """The server's session lifetime is stored in the catalog; gc in another process
    (here: another open of the repository) applies it instead of its own default."""
    repo = Repository.init(tmp_path / "r", "pass")
    repo.users.add("alice", "password1")
    assert repo.uploads.settings == UploadSettings()  # nothing recorded yet: the defaults
    settings = UploadSettings(session_ttl=48 * HOUR, checkpoint_bytes=2 * MiB, max_sessions_per_user=9,
                              max_length=10**9)
    repo.uploads.configure(settings)
    session = repo.uploads.create("alice", "/long", "range", 100)
    repo.uploads.append(session, 0, io.BytesIO(b"z" * 50), 50, allow_overlap=True)
    repo.close()

    admin = Repository.open(tmp_path / "r", "pass", mode="admin")
    try:
        assert load_settings(admin.catalog.reader()) == settings
        assert admin.uploads.settings == settings
        clock.set_offset(25 * HOUR)
        assert collect_garbage(admin).sessions_expired == 0
        assert admin.uploads.get(session.id, "alice").received == 50
        clock.set_offset(48 * HOUR + 60)
        assert collect_garbage(admin).sessions_expired == 1
    finally:
        admin.close()


def test_settings_are_validated():
    for bad in ({"session_ttl": 0}, {"session_ttl": -1.0}, {"checkpoint_bytes": 0}, {"max_sessions_per_user": 0},
                {"max_length": 0}):
        with pytest.raises(UsageError):
            UploadSettings(**bad)
    assert UploadSettings.from_json(UploadSettings(session_ttl=7.0).to_json()).session_ttl == 7.0
    assert UploadSettings.from_json('{"session_ttl": 5, "from_a_newer_version": 1}').session_ttl == 5
    with pytest.raises(UsageError):
        UploadSettings.from_json("[1, 2]")


def test_sessions_are_private_to_their_user(repo: Repository):
    up = repo.uploads
    session = up.create("alice", "/p", "ietf", None)
    with pytest.raises(NotFound):
        up.get(session.id, "bob")
    assert up.find("bob", "/p", "ietf") is None


def test_concurrent_appenders_one_wins(repo: Repository):
    up = repo.uploads
    session = up.create("alice", "/c", "range", 8 * MiB)
    gate = threading.Event()
    release = threading.Event()

    class SlowBody(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            gate.set()
            release.wait(10)
            return super().read(n)

    results: list[object] = []

    def first() -> None:
        results.append(up.append(session, 0, SlowBody(b"a" * MiB), MiB, allow_overlap=True))

    t = threading.Thread(target=first)
    t.start()
    assert gate.wait(10)
    with pytest.raises(Locked):
        up.append(session, 0, io.BytesIO(b"b" * MiB), MiB, allow_overlap=True)
    release.set()
    t.join(10)
    assert up.get(session.id, "alice").received == MiB
    assert repo.uploads.find("alice", "/c", "range") is not None


def test_whole_write_supersedes_sessions(repo: Repository):
    up = repo.uploads
    up.create("alice", "/s", "range", 10)
    up.create("alice", "/s", "ietf", None)
    assert up.discard_path("alice", "/s") == 2
    assert up.find("alice", "/s", "range") is None


def test_whole_write_finds_sessions_after_seeing_none(repo: Repository):
    """discard_path skips its query while no session exists: a session created since,
    by any thread, and one left by an earlier process are still found and dropped."""
    up = repo.uploads
    repo.namespace("alice").mkdir("/d")
    assert up.discard_path("alice", "/d/s") == 0  # none anywhere: remembered
    up.create("alice", "/d/s", "range", 10)
    assert up.discard_path("alice", "/d/s") == 1
    assert up.discard_path("alice", "/d/s") == 0

    stop = threading.Event()

    def other_puts() -> None:  # keeps looking (and finding none elsewhere) meanwhile
        while not stop.is_set():
            up.discard_path("bob", "/elsewhere")

    looker = threading.Thread(target=other_puts)
    looker.start()
    try:
        for i in range(40):
            up.create("alice", f"/d/f{i}", "range", 10)
            assert up.discard_path("alice", f"/d/f{i}") == 1, i
    finally:
        stop.set()
        looker.join(10)



def test_whole_write_finds_a_session_left_by_an_earlier_server(tmp_path: Path):
    with Repository.init(tmp_path / "r", "pass") as first:
        first.users.add("carol", "password3")
        first.uploads.create("carol", "/left", "range", 10)
    with Repository.open(tmp_path / "r", "pass") as again:
        assert again.uploads.discard_path("carol", "/left") == 1
        assert again.uploads.discard_path("carol", "/left") == 0


def test_session_needs_parent_folder(repo: Repository):
    with pytest.raises(Conflict):
        repo.uploads.create("alice", "/missing/f", "range", 10)


def test_patch_rewrites_only_touched_chunks(repo: Repository):
    ns = repo.namespace("alice")
    data = bytearray(os.urandom(16 * MiB))
    w = ns.open_write("/p")
    w.write(bytes(data))
    w.commit()
    conn = repo.catalog.reader()
    before = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    ns.patch("/p", 8 * MiB, io.BytesIO(b"PATCHED"), 7)
    data[8 * MiB : 8 * MiB + 7] = b"PATCHED"
    assert ns.open_read("/p").read() == bytes(data)
    after = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert after - before <= 2
    ns.patch("/p", None, io.BytesIO(b"END"), 3)
    assert ns.open_read("/p").read() == bytes(data) + b"END"
    with pytest.raises(RangeError):
        ns.patch("/p", len(data) + 100, io.BytesIO(b"x"), 1)


def test_open_sessions_per_user_are_limited(repo: Repository):
    up = repo.uploads
    up.settings = replace(up.settings, max_sessions_per_user=2)
    first = up.create("alice", "/a", "ietf", None)
    up.create("alice", "/b", "range", None)
    with pytest.raises(TooManyUploads) as refused:
        up.create("alice", "/c", "ietf", None)
    assert refused.value.http_status == 429 and "limit is 2" in refused.value.message
    up.cancel(first)
    up.create("alice", "/c", "ietf", None)


def test_declared_lengths_are_limited(repo: Repository):
    up = repo.uploads
    up.settings = replace(up.settings, max_length=1000)
    with pytest.raises(TooLarge):
        up.create("alice", "/big", "ietf", 1001)
    with pytest.raises(LengthMismatch):
        up.create("alice", "/neg", "ietf", -1)
    session = up.create("alice", "/big", "ietf", None)
    with pytest.raises(TooLarge):
        up.set_total(session, 10**15)
    assert up.get(session.id, "alice").total is None
    assert up.set_total(session, 1000).total == 1000


def test_single_create_returns_the_session_a_concurrent_request_made(repo):
    """Range PUT keeps one session per path: a first part that raced another one gets
    the session the other made (found by scripts/soak: two sessions, one's bytes lost)."""
    up = repo.uploads
    first = up.create("alice", "/same", "range", 10, single=True)
    assert up.create("alice", "/same", "range", 10, single=True).id == first.id
    assert up.create("bob", "/same", "range", 10, single=True).id != first.id
    assert up.create("alice", "/same", "ietf", 10).id != first.id  # IETF: one resource per creation
