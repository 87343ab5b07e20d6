"""Request headers of the resume protocols, parsed without I/O (see provider/resumable.py).

``Content-Range`` of a range PUT (RFC 9110 §14.4), ``X-Update-Range`` of a SabreDAV
PATCH, the RFC 9651 structured items of the IETF draft (``Upload-Complete``,
``Upload-Offset``, ``Upload-Length``) and the whole-file digests ``Repr-Digest``
(RFC 9530) and ``OC-Checksum`` (ownCloud). Each parser returns None for a value it
cannot read; only the digest parser raises (a 400), because a digest the client
sent but the server ignored would defeat its purpose.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from wsgidav.dav_error import DAVError

from davbackup.uploads import Digests

Environ = dict[str, Any]


@dataclass(frozen=True)
class ContentRange:
    """``bytes S-E/T`` (``start``/``end`` None for the ``*/T`` query; ``total`` None for ``*``)."""

    start: int | None
    end: int | None
    total: int | None

    @property
    def is_query(self) -> bool:
        return self.start is None

    @property
    def length(self) -> int:
        assert self.start is not None and self.end is not None
        return self.end - self.start + 1


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d{1,19})-(\d{1,19})|(\*))/(\d{1,19}|\*)\s*$", re.IGNORECASE)


def parse_content_range(value: str) -> ContentRange | None:
    """Parse a request ``Content-Range``; None if malformed (RFC 9110 §14.4)."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None
    start_s, end_s, star, total_s = match.groups()
    total = None if total_s == "*" else int(total_s)
    if star:
        return ContentRange(None, None, total)
    start, end = int(start_s), int(end_s)
    if end < start or (total is not None and end >= total):
        return None
    return ContentRange(start, end, total)


@dataclass(frozen=True)
class UpdateRange:
    """A parsed ``X-Update-Range``: kind is ``"append"``, ``"range"``, ``"from"`` or ``"suffix"``."""

    kind: str
    first: int = 0
    last: int = 0


_UPDATE_RANGE = re.compile(r"^\s*bytes=(\d{0,19})-(\d{0,19})\s*$", re.IGNORECASE)


def parse_update_range(value: str) -> UpdateRange | None:
    if value.strip().lower() == "append":
        return UpdateRange("append")
    match = _UPDATE_RANGE.match(value)
    if not match:
        return None
    first, last = match.groups()
    if first and last:
        return UpdateRange("range", int(first), int(last))
    if first:
        return UpdateRange("from", int(first))
    if last:
        return UpdateRange("suffix", int(last))
    return None


def parse_sf_boolean(value: str | None) -> bool | None:
    """An RFC 9651 Boolean item (``?0``/``?1``, parameters ignored); None if absent or invalid."""
    if value is None:
        return None
    item = value.split(";", 1)[0].strip()
    return {"?1": True, "?0": False}.get(item)


def parse_sf_integer(value: str | None) -> int | None:
    """A non-negative RFC 9651 Integer item; None if absent or invalid."""
    if value is None:
        return None
    item = value.split(";", 1)[0].strip()
    if not item.isdigit() or len(item) > 15:
        return None
    return int(item)


_REPR_DIGEST_MEMBER = re.compile(r"^\s*([a-z][a-z0-9_.*-]*)\s*=\s*:([A-Za-z0-9+/=]*):\s*(?:;.*)?$")


def parse_digests(environ: Environ) -> Digests | None:
    """Whole-file digests from ``Repr-Digest`` (RFC 9530) and ``OC-Checksum`` (ownCloud).

    Unknown algorithms are ignored; a malformed value is a 400.
    """
    sha256 = sha1 = None
    repr_digest = environ.get("HTTP_REPR_DIGEST")
    if repr_digest:
        for member in repr_digest.split(","):
            match = _REPR_DIGEST_MEMBER.match(member)
            if not match:
                raise DAVError(400, f"malformed Repr-Digest member {member.strip()!r}")
            algorithm, encoded = match.groups()
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise DAVError(400, f"Repr-Digest {algorithm}: invalid base64") from None
            if algorithm == "sha-256":
                if len(raw) != 32:
                    raise DAVError(400, "Repr-Digest sha-256 must be 32 bytes")
                sha256 = raw
    checksum = environ.get("HTTP_OC_CHECKSUM")
    if checksum:
        for token in checksum.split():
            algorithm, _, hexvalue = token.partition(":")
            if algorithm.upper() != "SHA1":
                continue
            try:
                raw = bytes.fromhex(hexvalue)
            except ValueError:
                raise DAVError(400, f"OC-Checksum: invalid hex {hexvalue!r}") from None
            if len(raw) != 20:
                raise DAVError(400, "OC-Checksum SHA1 must be 20 bytes")
            sha1 = raw
    if sha256 is None and sha1 is None:
        return None
    return Digests(sha256=sha256, sha1=sha1)
