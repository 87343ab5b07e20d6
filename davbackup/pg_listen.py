"""PostgreSQL ``LISTEN``/``NOTIFY`` between the nodes of a cluster (DESIGN.md §7.5).

A serving node keeps one extra session that listens on the channels handlers were
registered for and calls each handler, in the listener's thread, with the payload of
every notification on its channel. A lost session is replaced within seconds
(notifications sent meanwhile are lost: senders that need an effect repeat theirs
until they see it). Handlers must be quick; an exception in one is logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

_log = logging.getLogger(__name__)

#: seconds between checks of the stop flag, and before reconnecting a lost session
POLL_SECONDS = 1.0


class Listener:
    """One listening session for this process; handlers are added at any time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, channel: str, handler: Callable[[str], None]) -> None:
        with self._lock:
            self._handlers[channel] = handler
            self._changed.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="davbackup-pg-listen", daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    self._listen(conn)
            except psycopg.Error as exc:
                _log.debug("the listening session was lost (%s); reconnecting", exc)
                self._stop.wait(POLL_SECONDS)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        listening: set[str] = set()
        while not self._stop.is_set():
            if self._changed.is_set():
                self._changed.clear()
                with self._lock:
                    channels = set(self._handlers) - listening
                for channel in channels:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    listening.add(channel)
            for notify in conn.notifies(timeout=POLL_SECONDS):
                with self._lock:
                    handler = self._handlers.get(notify.channel)
                if handler is None:
                    continue
                try:
                    handler(notify.payload)
                except Exception:  # noqa: BLE001 - one bad handler must not stop the others
                    _log.exception("handler of notification channel %s failed", notify.channel)
                if self._changed.is_set():
                    break
