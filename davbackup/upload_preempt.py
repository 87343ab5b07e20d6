"""Stopping an upload append that runs on another node (DESIGN.md §7.5, §13).

The IETF draft lets a client resume while its previous request still runs on the
server: the server stops the old request (keeping what arrived) and answers the new
one with the fresh offset. On one node the provider stops the running body itself.
In a cluster the old request may run on another node, which holds the upload's
cluster-wide lock (``upload:<id>``, :class:`davbackup.uploads.UploadManager`) while it
appends. The node of the new request then asks every node, by a PostgreSQL
notification, to stop its append of that upload, and waits (bounded) until the lock
is free: the other node's append has then stored what arrived and ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: the notification channel; the payload is the upload session's ID
CHANNEL = "davbackup_stop_append"
POLL_SECONDS = 0.05
RESEND_SECONDS = 1.0  # a node that was reconnecting its listening session missed the first


def lock_name(sid: str) -> str:
    """The cluster-wide lock a node holds while it appends to upload ``sid``."""
    return "upload:" + sid


def stop_elsewhere(catalog: Any, sid: str, wait: float) -> bool:
    """Stop an append of upload ``sid`` running on another node and wait up to ``wait``
    seconds for it to end. True when no append runs any more (or the catalog is not
    shared); False if one still runs after ``wait`` (the request then meets a 423).
    Callers must have checked that the request's user owns ``sid``."""
    if not catalog.shared or catalog.lock_free(lock_name(sid)):
        return True
    deadline = time.monotonic() + wait
    sent = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() - sent >= RESEND_SECONDS:
            catalog.notify(CHANNEL, sid)
            sent = time.monotonic()
        time.sleep(POLL_SECONDS)
        if catalog.lock_free(lock_name(sid)):
            return True
    return False


def serve_stop_requests(catalog: Any, stop_local: Callable[[str], None]) -> None:
    """On a serving node of a cluster: stop this node's append of an upload when
    another node asks (``stop_local(sid)`` must return at once)."""
    if catalog.shared:
        catalog.listen(CHANNEL, stop_local)
