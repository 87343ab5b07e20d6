"""Unit tests of the adapter's small parts: ref URLs, throttling, Basic parsing, the XML
guard, body sizes, path checks, the config file, and lock storage over a repository."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsgidav.dav_error import DAVError
from wsgidav.lock_man.lock_manager import LockManager

from davbackup.errors import UsageError
from davbackup.repository import Repository
from provider.auth import _parse_basic
from provider.config_file import load_options, settings_from_options
from provider.locks import RepositoryLockStorage, check_write_locks
from provider.paths import normalize_path, ref_url, ref_url_to_client_href, split_ref_url
from provider.ranges import decide
from provider.request_log import _path_problem
from provider.request_server import guard_xml_body
from provider.resources import expected_body_size
from tests.core_fixtures import PASSPHRASE, init_repo

ROOT = Path(__file__).resolve().parents[2]

names = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


# --- ref URLs ------------------------------------------------------------------------------


@given(user=names, parts=st.lists(names, max_size=4), is_dir=st.booleans())
def test_ref_url_round_trip(user: str, parts: list[str], is_dir: bool) -> None:
    path = "/" + "/".join(parts)
    url = ref_url(user, path, is_collection=is_dir)
    assert url.startswith("/") and url.count("/") >= 2
    assert split_ref_url(url) == (user, normalize_path(path))


def test_ref_urls_of_users_never_overlap() -> None:
    assert ref_url("a/b", "/c", is_collection=False) != ref_url("a", "/b/c", is_collection=False)
    assert ref_url("alice", "/", is_collection=True) == "/alice/"
    assert ref_url("alice", "/d", is_collection=True) == "/alice/d/"
    assert ref_url_to_client_href("/alice/d%20e") == "/d%20e"
    assert ref_url_to_client_href("/alice") == "/"


# --- Basic credentials (throttling: tests/provider/test_provider_throttle.py) ---------------------------


@pytest.mark.parametrize("header, expected", [
    ("Basic YWxpY2U6cHc6eA==", ("alice", "pw:x")),
    ("basic YWxpY2U6", ("alice", "")),
    ("Basic !!!", None),
    ("Basic bm9jb2xvbg==", None),     # no colon
    ("Basic Ong=", None),             # empty user name
    ("Basic //79", None),             # not UTF-8
    ("Digest x", None),
])
def test_parse_basic(header: str, expected: tuple[str, str] | None) -> None:
    assert _parse_basic(header) == expected


# --- request bodies and paths -----------------------------------------------------------------


def _environ(body: bytes, **extra: str) -> dict:
    env = {"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
    env.update(extra)
    return env


def test_xml_guard_passes_plain_xml_and_re_presents_it() -> None:
    body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    env = _environ(body)
    guard_xml_body(env, 1 << 20)
    assert env["wsgi.input"].read() == body


@pytest.mark.parametrize("body", [
    b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>',
    b'<!DOCTYPE x SYSTEM "http://example.com/x.dtd"><x/>',
    "<?xml version='1.0' encoding='utf-16'?><!DOCTYPE x [<!ENTITY a 'b'>]><x/>".encode("utf-16"),
    b"<x>",
])
def test_xml_guard_refuses(body: bytes) -> None:
    with pytest.raises(DAVError) as info:
        guard_xml_body(_environ(body), 1 << 20)
    assert info.value.value == 400


def test_xml_guard_limits_size_also_for_chunked() -> None:
    with pytest.raises(DAVError) as info:
        guard_xml_body({"wsgi.input": io.BytesIO(b"<x/>" * 100),
                        "HTTP_TRANSFER_ENCODING": "chunked"}, 64)
    assert info.value.value == 413


def test_expected_body_size() -> None:
    assert expected_body_size({"CONTENT_LENGTH": "12"}) == 12
    assert expected_body_size({}) is None
    assert expected_body_size({"HTTP_TRANSFER_ENCODING": "chunked",
                               "HTTP_X_EXPECTED_ENTITY_LENGTH": "7"}) == 7
    with pytest.raises(DAVError):
        expected_body_size({"CONTENT_LENGTH": "-1"})


@pytest.mark.parametrize("path, ok", [
    ("/", True), ("/a/../b", True), ("/a/./b", True), ("*", True),
    ("/..", False), ("/a/../../b", False), ("/\xff\xfe", False),
    ("/\xc3\xa4", True),  # "ä" as WSGI hands it over (latin-1 decoded UTF-8)
])
def test_path_problem(path: str, ok: bool) -> None:
    assert (_path_problem(path) is None) is ok


@pytest.mark.parametrize("header, size, expected", [
    ("bytes=0-9", 100, "bytes=0-9"),
    ("bytes=90-200", 100, "bytes=90-99"),
    ("bytes=-500", 100, "bytes=0-99"),
    ("BYTES = 5-", 100, None),          # whitespace around '=' is not allowed
    ("bytes=0-1, ,", 10, "bytes=0-1"),  # empty list elements are
    ("bytes=5-3", 100, None),
    ("bytes=1-2-3", 100, None),
    ("bytes=-", 100, None),
    ("items=0-9", 100, None),
    ("bytes=0-1,5-6", 100, None),       # several ranges: whole file
    ("bytes=0-9", 0, None),             # empty file: whole (empty) file
    ("bytes=200-", 100, "unsatisfiable"),
    ("bytes=-0", 100, "unsatisfiable"),
    ("bytes=200-300,-0", 100, "unsatisfiable"),
])
def test_range_decisions(header: str, size: int, expected: str | None) -> None:
    decision = decide(header, size)
    if expected == "unsatisfiable":
        assert decision.unsatisfiable and decision.header is None
    else:
        assert not decision.unsatisfiable and decision.header == expected
    if decision.header is None:
        assert decision.span is None
    else:  # GET's direct path uses the span as WsgiDAV's parser reads the header
        from wsgidav.util import obtain_content_ranges
        assert [(first, last) for first, last, _n in obtain_content_ranges(decision.header, size)[0]] == [decision.span]


# --- the config file -----------------------------------------------------------------------------


def test_example_config_documents_every_option() -> None:
    from provider.config_file import SCHEMA

    text = (ROOT / "config" / "davbackup.example.yaml").read_text()
    for key in SCHEMA:
        assert key.split(".")[-1] + ":" in text, key
    settings = settings_from_options(load_options(ROOT / "config" / "davbackup.example.yaml"))
    assert settings.port == 8080 and settings.block_size == 1 << 20


def test_config_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    for text in ("porrt: 1\n", "port: eighty\n", "server: 3\n", "tls:\n  cert: 5\n", "- a\n"):
        path.write_text(text)
        with pytest.raises(UsageError):
            load_options(path)


def test_config_limits_and_throttle_options() -> None:
    settings = settings_from_options({
        "server.max_header_bytes": 1000, "server.header_timeout": 2.5,
        "webdav.max_locks_per_resource": 3, "auth.trusted_proxies": "127.0.0.1, ::1",
        "auth.account_factor": 2,
    })
    assert settings.http_limits.max_header_bytes == 1000
    assert settings.http_limits.header_timeout == 2.5
    assert settings.max_locks_per_resource == 3
    assert settings.throttle.trusted_proxies == "127.0.0.1, ::1"
    assert settings.throttle.account_factor == 2
    for bad in ({"auth.trusted_proxies": "proxy.example"}, {"auth.proxy_header": "X Bad"},
                {"server.max_headers": 0}, {"server.header_timeout": 0.0},
                {"server.slow_header_workers": -1}, {"webdav.max_lock_owner": 0},
                {"auth.account_factor": 0}):
        with pytest.raises(UsageError):
            settings_from_options(bad)


def test_config_file_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "repo: data\ntls:\n  cert: c.pem\n  key: /abs/k.pem\nauth:\n  max_failures: 9\n"
    )
    options = load_options(path)
    assert options["repo"] == tmp_path / "data"
    assert options["tls.cert"] == tmp_path / "c.pem"
    assert options["tls.key"] == Path("/abs/k.pem")
    assert settings_from_options(options).throttle.max_failures == 9
    with pytest.raises(UsageError):
        settings_from_options({"tls.cert": Path("x")})


# --- lock storage over the repository --------------------------------------------------------


def _lock(manager: LockManager, url: str, principal: str = "alice", depth: str = "0") -> dict:
    return manager.acquire(url=url, lock_type="write", lock_scope="exclusive",
                           lock_depth=depth, lock_owner=b"<owner>me</owner>", timeout=100,
                           principal=principal, token_list=[])


def test_lock_storage_survives_reopen(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    try:
        manager = LockManager(RepositoryLockStorage(repo))
        lock = _lock(manager, "/alice/a/b.txt")
        assert manager.get_lock(lock["token"])["owner"] == b"<owner>me</owner>"
        manager.refresh(lock["token"], timeout=500)
    finally:
        repo.close()
    repo = Repository.open(tmp_path / "repo", PASSPHRASE)
    try:
        storage = RepositoryLockStorage(repo)
        storage.open()
        again = storage.get(lock["token"])
        assert again is not None and again["root"] == "/alice/a/b.txt"
        assert again["owner"] == b"<owner>me</owner>"
        assert again["expire"] > time.time() + 400
        assert storage.get_lock_list("/alice/a", include_root=False, include_children=True,
                                     token_only=True) == [lock["token"]]
        assert storage.get_lock_list("/alice/a/b.txt", include_root=True,
                                     include_children=False, token_only=True) == [lock["token"]]
        assert storage.get_lock_list("/bob/a", include_root=True, include_children=True,
                                     token_only=True) == []
        assert storage.delete(lock["token"])
        assert repo.locks.get(lock["token"]) is None
    finally:
        repo.close()


def test_expired_locks_are_purged(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    try:
        storage = RepositoryLockStorage(repo)
        storage.open()
        lock = storage.create("/alice/x", {"type": "write", "scope": "exclusive", "depth": "0",
                                           "owner": b"", "timeout": 1, "principal": "alice"})
        lock["expire"] = time.time() - 1  # as if the lifetime had passed
        assert storage.get(lock["token"]) is None
        assert repo.locks.get(lock["token"]) is None
    finally:
        repo.close()


def test_member_tokens_allow_depth_infinity_writes(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo")
    try:
        manager = LockManager(RepositoryLockStorage(repo))
        member = _lock(manager, "/alice/dir/f.txt")
        with pytest.raises(DAVError) as info:
            check_write_locks(manager, url="/alice/dir/", depth="infinity", token_list=[],
                              principal="alice")
        assert info.value.value == 423
        assert info.value.err_condition.hrefs == ["/alice/dir/f.txt"]
        check_write_locks(manager, url="/alice/dir/", depth="infinity",
                          token_list=[member["token"]], principal="alice")
        with pytest.raises(DAVError):  # another principal's token does not count
            check_write_locks(manager, url="/alice/dir/", depth="infinity",
                              token_list=[member["token"]], principal="bob")
        check_write_locks(manager, url="/alice/dir/", depth="0", token_list=[],
                          principal="alice")
    finally:
        repo.close()
