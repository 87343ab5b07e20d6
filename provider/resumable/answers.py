"""Writing answers of the resume protocols, and remembering recently completed uploads.

* :func:`respond` writes a plain answer (``text/plain`` body, or none), :func:`problem`
  an RFC 9457 problem document (``application/problem+json``).
* :data:`RECENT` remembers uploads that completed in the last hour (in this process),
  so a client that lost the final answer learns that its upload is complete.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable

from wsgidav import util

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]

PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"
RECENT_TTL = 3600.0
RECENT_MAX = 4096


def respond(start_response: StartResponse, status: int, headers: Headers, text: str = "",
            *, head: bool = False) -> list[bytes]:
    """A plain answer; ``head``: the headers of the answer to GET, without the body."""
    body = b"" if head or status in (204, 304) else text.encode("utf-8")
    phrase = "Resume Incomplete" if status == 308 else HTTPStatus(status).phrase
    all_headers = list(headers)
    if status not in (204, 304):
        all_headers.append(("Content-Length", str(len(text.encode("utf-8")) if head else len(body))))
        if body:
            all_headers.append(("Content-Type", "text/plain; charset=utf-8"))
    else:
        all_headers.append(("Content-Length", "0"))
    all_headers.append(("Date", util.get_rfc1123_time()))
    start_response(f"{status} {phrase}", all_headers)
    return [body]


def problem(start_response: StartResponse, status: int, kind: str, title: str,
            headers: Headers | None = None, members: dict[str, Any] | None = None) -> list[bytes]:
    """An RFC 9457 problem answer; ``kind`` is a registered problem type name or a URI."""
    kind = kind if ":" in kind else PROBLEM_BASE + kind
    doc = {"type": kind, "title": title, **(members or {})}
    body = json.dumps(doc).encode("utf-8")
    all_headers = list(headers or []) + [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(len(body))),
        ("Date", util.get_rfc1123_time()),
    ]
    start_response(f"{status} {HTTPStatus(status).phrase}", all_headers)
    return [body]


@dataclass(frozen=True)
class Done:
    size: int
    etag: str
    sha256: str | None = None  # base64, when the client sent Repr-Digest at the start


class _Recent:
    """Completed uploads of the last hour, in this process only (bounded)."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, ...], tuple[float, Done]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: tuple[str, ...], done: Done) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), done)
            self._items.move_to_end(key)
            while len(self._items) > RECENT_MAX:
                self._items.popitem(last=False)

    def lookup(self, key: tuple[str, ...]) -> Done | None:
        with self._lock:
            item = self._items.get(key)
        if item is None or time.monotonic() - item[0] > RECENT_TTL:
            return None
        return item[1]


RECENT = _Recent()
