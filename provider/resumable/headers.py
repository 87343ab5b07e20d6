"""Request headers of the resume protocols, parsed without I/O (see provider/resumable/).

``Content-Range`` of a range PUT (RFC 9110 §14.4), ``X-Update-Range`` of a SabreDAV
PATCH, the RFC 9651 structured items of the IETF draft (``Upload-Complete``,
``Upload-Offset``, ``Upload-Length``) and the whole-file digests ``Repr-Digest``
(RFC 9530) and ``OC-Checksum`` (ownCloud), parsed in :mod:`provider.digests` (whole
PUTs check them too). Each parser returns None for a value it
cannot read, including numbers above 2**63 - 1 (the catalog stores 64-bit
integers, and no real file comes near); only the digest parser raises (a 400),
because a digest the client sent but the server ignored would defeat its purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from provider.digests import parse_digests

__all__ = [
    "ContentRange", "UpdateRange", "parse_content_range", "parse_digests", "parse_sf_boolean",
    "parse_sf_integer", "parse_update_range",
]

#: the largest offset or length a header may carry (SQLite's INTEGER)
MAX_INT64 = (1 << 63) - 1


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
    if total is not None and total > MAX_INT64:
        return None
    if star:
        return ContentRange(None, None, total)
    start, end = int(start_s), int(end_s)
    if end < start or end > MAX_INT64 or (total is not None and end >= total):
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
