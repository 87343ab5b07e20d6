"""Pieces of the client that need no server: sizes, URLs, credentials, backoff, state."""

from __future__ import annotations

from pathlib import Path

import pytest

from davbackup.client import ClientState, parse_size, resolve_credentials, split_url
from davbackup.client.retry import Backoff
from davbackup.client.state import DownloadRecord, UploadRecord
from davbackup.errors import UsageError


@pytest.mark.parametrize("text, expected", [
    ("4096", 4096), ("64M", 64 << 20), ("64MiB", 64 << 20), ("1g", 1 << 30), ("512k", 512 << 10),
    ("1.5M", 3 << 19), ("2MB", 2 << 20),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "zero", "-1", "0", "5X"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize("url, expected", [
    ("http://h:8080", ("http://h:8080", "/")),
    ("http://h:8080/", ("http://h:8080", "/")),
    ("https://h/a/b/", ("https://h", "/a/b")),
    ("http://h/a%20b/c", ("http://h", "/a b/c")),
    ("http://h/a/../b", ("http://h", "/b")),
])
def test_split_url(url, expected):
    assert split_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://h/x", "h/x", "http://user:pw@h/x"])
def test_split_url_rejects(url):
    with pytest.raises(UsageError):
        split_url(url)


def test_credentials_order(tmp_path: Path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login carol password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.delenv("DAVBACKUP_PASSWORD", raising=False)
    creds = resolve_credentials("https://example.org/x", None, netrc, interactive=False)
    assert (creds.user, creds.password) == ("carol", "from-netrc")
    assert "from-netrc" not in repr(creds)
    monkeypatch.setenv("DAVBACKUP_PASSWORD", "from-env")
    assert resolve_credentials("https://example.org/x", "carol", netrc).password == "from-env"
    monkeypatch.delenv("DAVBACKUP_PASSWORD")
    with pytest.raises(UsageError):  # another user than the netrc entry's, no prompt possible
        resolve_credentials("https://example.org/x", "dave", netrc, interactive=False)
    with pytest.raises(UsageError):  # no user at all
        resolve_credentials("https://other.org/x", None, netrc, interactive=False)
    with pytest.raises(UsageError):
        resolve_credentials("https://other.org/x", "x", tmp_path / "missing", interactive=False)


def test_backoff_budget_and_reset():
    slept: list[float] = []
    backoff = Backoff(retries=3, base=1.0, maximum=4.0, sleep=slept.append)
    assert backoff.failed() and backoff.failed() and backoff.failed()
    assert not backoff.failed()
    assert 0.75 <= slept[0] <= 1.25 and 1.5 <= slept[1] <= 2.5 and 3.0 <= slept[2] <= 4.0
    backoff.progress()
    assert backoff.failed(retry_after=3.5) and slept[-1] >= 3.5


def test_state_round_trip(tmp_path: Path):
    state = ClientState(tmp_path / "s" / "state.sqlite")
    key = ClientState.key("http://h", "u", "/a")
    assert state.uploaded(key) is None
    state.record_upload(key, UploadRecord(3, 5, "ab", "etag"))
    state.record_download(key, DownloadRecord(3, 5, "etag"))
    state.set_partial(key, "e1")
    state.close()
    state = ClientState(tmp_path / "s" / "state.sqlite")
    assert state.uploaded(key) == UploadRecord(3, 5, "ab", "etag")
    assert state.downloaded(key) == DownloadRecord(3, 5, "etag")
    assert state.partial_etag(key) == "e1"
    state.set_partial(key, None)
    assert state.partial_etag(key) is None
