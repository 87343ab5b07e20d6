"""Strict ``Range`` header handling for GET/HEAD (RFC 9110 §14).

WsgiDAV's own parser is lenient in ways that serve wrong bytes: ``bytes=5-3`` or
``bytes=1-2-3`` come back as 206 with some other range, an unknown unit is treated as
bytes, and of several ranges only the last one is sent. The request server therefore
normalizes the header before WsgiDAV sees it (:func:`decide`):

* anything that is not a well-formed ``bytes`` range set is ignored (200, whole file),
  as RFC 9110 allows for an invalid or unknown ranges-specifier;
* a set with no satisfiable range is answered 416 with ``Content-Range: bytes */size``;
* several satisfiable ranges are ignored too (200): the server sends no
  ``multipart/byteranges``, and sending only one of them would be wrong;
* exactly one satisfiable range is handed on in canonical ``bytes=S-E`` form.

Positions of any length are read (a 5,000-digit one too): a number with more than
18 digits lies beyond every file, so it is read as :data:`BEYOND` instead of being
converted (Python refuses to convert very long digit strings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"^(\d*)-(\d*)$")
#: stands for every position past the end of any file
BEYOND = 10**18


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else BEYOND


@dataclass(frozen=True)
class RangeDecision:
    """What to do with a Range header: ``header`` to pass on (None = ignore it),
    or ``unsatisfiable`` for a 416."""

    header: str | None
    unsatisfiable: bool = False
    #: the one range passed on, ``(first, last)`` within the representation
    span: tuple[int, int] | None = None


def parse(value: str) -> list[tuple[int | None, int | None]] | None:
    """``[(first, last), ...]`` (``(None, n)`` = the last n bytes), or None if invalid."""
    unit, sep, ranges = value.partition("=")
    if not sep or unit.lower() != "bytes":
        return None
    specs: list[tuple[int | None, int | None]] = []
    for part in ranges.split(","):
        part = part.strip(" \t")
        if not part:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1)
        match = _SPEC.match(part)
        if match is None:
            return None
        first, last = match.group(1), match.group(2)
        if not first and not last:
            return None
        if not first:
            specs.append((None, _position(last)))
        elif not last:
            specs.append((_position(first), None))
        else:
            if _position(last) < _position(first):
                return None
            specs.append((_position(first), _position(last)))
    return specs or None


def decide(value: str, size: int) -> RangeDecision:
    """How to answer ``Range: value`` for a representation of ``size`` bytes."""
    specs = parse(value)
    if specs is None or size == 0:
        return RangeDecision(None)
    satisfiable: list[tuple[int, int]] = []
    for first, last in specs:
        if first is None:
            assert last is not None
            if last > 0:
                satisfiable.append((max(0, size - last), size - 1))
        elif first < size:
            satisfiable.append((first, size - 1 if last is None else min(last, size - 1)))
    if not satisfiable:
        return RangeDecision(None, unsatisfiable=True)
    if len(satisfiable) > 1:
        return RangeDecision(None)
    start, end = satisfiable[0]
    return RangeDecision(f"bytes={start}-{end}", span=(start, end))
