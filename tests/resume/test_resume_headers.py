"""Parsing of the resume protocols' request headers (provider/resumable/headers.py, provider/digests.py)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsgidav.dav_error import DAVError

from provider.resumable.headers import (
    ContentRange,
    UpdateRange,
    parse_content_range,
    parse_digests,
    parse_sf_boolean,
    parse_sf_integer,
    parse_update_range,
)


@pytest.mark.parametrize("value, expected", [
    ("bytes 0-99/100", ContentRange(0, 99, 100)),
    ("bytes 5-5/6", ContentRange(5, 5, 6)),
    ("BYTES 0-9/*", ContentRange(0, 9, None)),
    ("bytes */100", ContentRange(None, None, 100)),
    ("bytes */*", ContentRange(None, None, None)),
    ("  bytes 1-2/3  ", ContentRange(1, 2, 3)),
])
def test_content_range_valid(value, expected):
    assert parse_content_range(value) == expected


@pytest.mark.parametrize("value", [
    "", "bytes", "bytes 0-99", "bytes=0-99/100", "bytes 9-0/100", "bytes 0-100/100", "bytes -1-5/10",
    "bytes 0-5/-1", "items 0-1/2", "bytes 0-1/2, 3-4/5", "bytes 1/2", "bytes 0x1-2/3",
])
def test_content_range_invalid(value):
    assert parse_content_range(value) is None


@given(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(1, 2**41))
def test_content_range_round_trip(start, length, total):
    end = start + length
    parsed = parse_content_range(f"bytes {start}-{end}/{total}")
    if end < total:
        assert parsed == ContentRange(start, end, total) and parsed.length == length + 1
    else:
        assert parsed is None


@pytest.mark.parametrize("value, expected", [
    ("append", UpdateRange("append")),
    ("APPEND", UpdateRange("append")),
    ("bytes=2-4", UpdateRange("range", 2, 4)),
    ("bytes=8-", UpdateRange("from", 8)),
    ("bytes=-3", UpdateRange("suffix", 3)),
    ("bytes=4-2", UpdateRange("range", 4, 2)),  # the handler answers 416
    ("bytes=", None), ("bytes=-", None), ("", None), ("bytes=a-b", None), ("lines=1-2", None),
    ("bytes=1-2,3-4", None),
])
def test_update_range(value, expected):
    assert parse_update_range(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("?1", True), ("?0", False), (" ?1 ", True), ("?1;a=b", True), ("?2", None), ("1", None), ("true", None),
    (None, None),
])
def test_sf_boolean(value, expected):
    assert parse_sf_boolean(value) is expected


@pytest.mark.parametrize("value, expected", [
    ("0", 0), ("123", 123), (" 42 ", 42), ("-1", None), ("1.5", None), ("", None), ("abc", None), (None, None),
    ("1" * 16, None),
])
def test_sf_integer(value, expected):
    assert parse_sf_integer(value) == expected


def test_digests():
    data = b"hello"
    sha256 = hashlib.sha256(data).digest()
    sha1 = hashlib.sha1(data).digest()
    env = {"HTTP_REPR_DIGEST": f"sha-512=:{base64.b64encode(b'x' * 64).decode()}:, "
                               f"sha-256=:{base64.b64encode(sha256).decode()}:",
           "HTTP_OC_CHECKSUM": f"MD5:abc SHA1:{sha1.hex()}"}
    digests = parse_digests(env)
    assert digests.sha256 == sha256 and digests.sha1 == sha1
    assert parse_digests({}) is None
    assert parse_digests({"HTTP_REPR_DIGEST": "sha-512=:AAAA:"}) is None
    assert parse_digests({"HTTP_OC_CHECKSUM": "MD5:00"}) is None


@pytest.mark.parametrize("env", [
    {"HTTP_REPR_DIGEST": "sha-256=abc"},
    {"HTTP_REPR_DIGEST": "sha-256=:!!!:"},
    {"HTTP_REPR_DIGEST": "sha-256=:YWJj:"},  # 3 bytes, not 32
    {"HTTP_OC_CHECKSUM": "SHA1:xyz"},
    {"HTTP_OC_CHECKSUM": "SHA1:abcd"},
])
def test_bad_digests(env):
    with pytest.raises(DAVError):
        parse_digests(env)
