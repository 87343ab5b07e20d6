"""The one table from core exceptions to answers of the resume protocols
(provider/resumable/errors.py)."""

from __future__ import annotations

import json

import pytest

from davbackup.errors import (
    Conflict,
    DavBackupError,
    IncompleteBody,
    IntegrityError,
    Locked,
    NotFound,
    RangeError,
    StorageFull,
    TooLarge,
    TooManyUploads,
)
from davbackup.errors import DigestMismatch, LengthMismatch, OffsetMismatch
from provider.resumable.errors import DIGEST_PROBLEM, ERRORS, answer_error, row_for


class Answer:
    """A WSGI ``start_response`` that keeps what it was given."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: dict[str, str] = {}

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        self.status = status
        self.headers = dict(headers)

    @property
    def code(self) -> int:
        return int(self.status.split()[0])


def test_each_row_has_the_status_its_exception_declares():
    for cls, row in ERRORS.items():
        assert row.status == cls.http_status, cls.__name__


def test_range_and_length_errors_are_consistent():
    assert row_for(RangeError("x")).status == 416
    assert row_for(LengthMismatch("x")).status == 400
    assert row_for(LengthMismatch("x")).element == "inconsistent-upload-length"


def test_nearest_class_wins():
    class SpecialConflict(Conflict):
        pass

    assert row_for(SpecialConflict("x")) is ERRORS[Conflict]
    assert row_for(OffsetMismatch("x", 3)) is ERRORS[OffsetMismatch]  # not Conflict's row (409 either way)


@pytest.mark.parametrize("exc", [IntegrityError("bad chunk"), StorageFull("disk full"), DavBackupError("x")])
def test_errors_outside_the_table_are_raised_again(exc):
    assert row_for(exc) is None
    with pytest.raises(type(exc)):
        answer_error(Answer(), exc)


def test_offset_mismatch_is_a_problem_with_both_offsets():
    start = Answer()
    body = b"".join(answer_error(start, OffsetMismatch("wrong offset", 3, 5), [("Upload-Offset", "99"),
                                                                               ("Upload-Complete", "?0")]))
    assert start.code == 409
    assert start.headers["Upload-Offset"] == "3"  # the exception's offset beats the state header
    assert start.headers["Upload-Complete"] == "?0"
    assert start.headers["Content-Type"] == "application/problem+json"
    doc = json.loads(body)
    assert doc["type"].endswith("#mismatching-upload-offset")
    assert (doc["expected-offset"], doc["provided-offset"], doc["title"]) == (3, 5, "wrong offset")


def test_plain_rows():
    for exc, code, header in [(Locked("busy"), 423, ("Retry-After", "2")), (RangeError("no"), 416, None),
                              (IncompleteBody("short"), 400, None), (NotFound("gone"), 404, None),
                              (TooLarge("big"), 413, None), (TooManyUploads("many"), 429, None)]:
        start = Answer()
        body = b"".join(answer_error(start, exc, [("Upload-Offset", "7")]))
        assert start.code == code
        assert start.headers["Upload-Offset"] == "7"
        assert start.headers["Content-Type"].startswith("text/plain")
        assert body == exc.message.encode() + b"\n"
        if header:
            assert start.headers[header[0]] == header[1]


def test_digest_mismatch_uses_davbackups_problem_type():
    start = Answer()
    doc = json.loads(b"".join(answer_error(start, DigestMismatch("SHA-256 differs"))))
    assert start.code == 400 and doc["type"] == DIGEST_PROBLEM
