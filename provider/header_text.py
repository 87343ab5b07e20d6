"""Header texts that depend on little, made once and then looked up (GET's direct path).

``email.utils.formatdate`` and ``mimetypes.guess_type`` cost a few microseconds each
call; a small GET asks for three of them. The texts depend only on the whole second
(``Date``, ``Last-Modified``) and on the end of the file's name (the type), so they are
kept in small dictionaries, emptied when they grow past a bound. Every text is exactly
what :mod:`wsgidav.util` gives for the same input.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from typing import Any

from wsgidav import util
from wsgidav.dav_error import DAVError

#: entries kept per dictionary before it is emptied
LIMIT = 4096


def mime_key(name: str) -> str:
    """The end of a file name that decides its type: ``mimetypes.guess_type`` looks at
    the last two extensions at most, and ``splitext`` ignores dots that start a name,
    so the key keeps one character before them (the whole name when that is a dot)."""
    last = name.rfind(".")
    if last <= 0:
        return name
    second = name.rfind(".", 0, last)
    start = (second if second >= 0 else last) - 1
    if start <= 0 or name[start] == ".":
        return name
    return name[start:]


class HeaderTexts:
    """``Date``, ``Last-Modified`` and ``Content-Type`` texts for one server's answers."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._now: tuple[int, str] = (-1, "")
        self._dates: dict[int, str] = {}
        self._types: dict[str, str] = {}

    def now(self) -> str:
        """``util.get_rfc1123_time()``: the current time, made once a second."""
        secs = time.time()
        second, text = self._now
        if math.floor(secs) != second:
            text = util.get_rfc1123_time(secs)
            self._now = (math.floor(secs), text)
        return text

    def date(self, secs: float) -> str:
        """``util.get_rfc1123_time(secs)``."""
        key = math.floor(secs)
        text = self._dates.get(key)
        if text is None:
            if len(self._dates) >= LIMIT:
                self._dates = {}
            text = self._dates[key] = util.get_rfc1123_time(secs)
        return text

    def mime_type(self, name: str) -> str:
        """``util.guess_mime_type(path, config)`` of a file called ``name``."""
        key = mime_key(name)
        text = self._types.get(key)
        if text is None:
            if len(self._types) >= LIMIT:
                self._types = {}
            text = self._types[key] = util.guess_mime_type("/" + key, self.config)
        return text


class StatusPage:
    """The body of ``util.send_status_response`` for a plain status (``201``):
    WsgiDAV's HTML page, whose only varying part is the time it was made
    (``str(datetime.datetime.now())``, which ``html_escape`` leaves as it is), made
    from the page WsgiDAV gives once, cut around that time."""

    _TIME = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?(?=\n</body>)")

    def __init__(self, status: int) -> None:
        self.content_type, page = DAVError(status).get_response_page()
        found = self._TIME.search(page)
        if found is None:
            raise ValueError(f"WsgiDAV's page for {status} has no time where expected: {page!r}")
        self._head, self._tail = page[: found.start()], page[found.end() :]

    def body(self) -> bytes:
        return self._head + str(datetime.datetime.now()).encode("ascii") + self._tail
