"""Upload sessions in the catalog: their rows and their life cycle (DESIGN.md §13).

A session's state lives in ``upload_sessions`` (one row: who, which path, how many
bytes are held) and ``session_chunks`` (the complete chunks received so far, plus at
most one "tail": the bytes after the last chunk boundary, stored as a chunk of their
own). The request side, :class:`davbackup.uploads.UploadManager`, turns requests into
the events below; this module is the only one that reads or writes the two tables.

Life cycle, as a transition table (``TRANSITIONS``)::

    (none)     --create-->   receiving
    receiving  --append-->   receiving
    receiving  --complete--> (removed)   the new version is current
    receiving  --cancel-->   (removed)   chunks become garbage
    receiving  --expire-->   (removed)   idle longer than the lifetime (request or gc)

Any other event is refused: an event on a session that is gone (completed,
cancelled, expired, or its user removed) raises :class:`~davbackup.errors.NotFound`.
The current state is read inside the transaction that applies the event, so two
requests racing to end one session cannot both succeed. Functions that take a
connection run inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

from davbackup.errors import Conflict, NotFound, TooManyUploads

NONE = "none"
RECEIVING = "receiving"
STATES = (NONE, RECEIVING)
EVENTS = ("create", "append", "complete", "cancel", "expire")
TRANSITIONS: dict[tuple[str, str], str] = {
    (NONE, "create"): RECEIVING,
    (RECEIVING, "append"): RECEIVING,
    (RECEIVING, "complete"): NONE,
    (RECEIVING, "cancel"): NONE,
    (RECEIVING, "expire"): NONE,
}
GONE = "no such upload session (finished, cancelled or expired)"

#: the columns of a session row, in the order :func:`get` and :func:`for_path` return them
COLUMNS = "id, user_name, path_enc, protocol, total, received, created, updated, meta"
Row = tuple[Any, ...]


def transition(state: str, event: str) -> str:
    """The next state. An event on a session that no longer exists is
    :class:`NotFound` (404: the client's upload URL is stale); any other illegal
    event is :class:`Conflict`."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        if state == NONE and event in EVENTS:
            raise NotFound(f"{GONE}: cannot {event}") from None
        raise Conflict(f"upload session: cannot {event} when {state}") from None


def state(conn: sqlite3.Connection, session_id: str) -> str:
    found = conn.execute("SELECT 1 FROM upload_sessions WHERE id=?", (session_id,)).fetchone()
    return RECEIVING if found else NONE


# -- reading -------------------------------------------------------------------------


def get(conn: sqlite3.Connection, session_id: str) -> Row | None:
    row: Row | None = conn.execute(f"SELECT {COLUMNS} FROM upload_sessions WHERE id=?", (session_id,)).fetchone()
    return row


def for_path(conn: sqlite3.Connection, user: str, path_hash: bytes, protocol: str) -> list[Row]:
    return conn.execute(
        f"SELECT {COLUMNS} FROM upload_sessions WHERE user_name=? AND path_hash=? AND protocol=?",
        (user, path_hash, protocol),
    ).fetchall()


def any_session(conn: sqlite3.Connection) -> bool:
    """Whether any upload session exists (of any user, in any state)."""
    return conn.execute("SELECT 1 FROM upload_sessions LIMIT 1").fetchone() is not None


def any_for_path(conn: sqlite3.Connection, user: str, path_hash: bytes) -> bool:
    row = conn.execute(
        "SELECT 1 FROM upload_sessions WHERE user_name=? AND path_hash=? LIMIT 1", (user, path_hash)
    ).fetchone()
    return row is not None


def chunk_rows(conn: sqlite3.Connection, session_id: str) -> list[tuple[int, int, bytes, int]]:
    """``(offset, length, chunk_id, is_tail)`` of the chunks a session holds, in order."""
    return conn.execute(
        "SELECT offset, length, chunk_id, is_tail FROM session_chunks WHERE session_id=? ORDER BY offset",
        (session_id,),
    ).fetchall()


# -- events --------------------------------------------------------------------------


def create(conn: sqlite3.Connection, session_id: str, user: str, path_hash: bytes, path_enc: bytes, protocol: str,
           total: int | None, now: float, meta: str, *, limit: int, idle_since: float) -> None:
    """Insert a new session, unless the user has ``limit`` sessions active since
    ``idle_since`` already (:class:`TooManyUploads`)."""
    (open_sessions,) = conn.execute(
        "SELECT COUNT(*) FROM upload_sessions WHERE user_name=? AND updated>=?", (user, idle_since)
    ).fetchone()
    if open_sessions >= limit:
        raise TooManyUploads(
            f"{user} has {open_sessions} open uploads (the limit is {limit}): finish or cancel one first"
        )
    conn.execute(
        "INSERT INTO upload_sessions(id, user_name, path_hash, path_enc, protocol, total, received, state,"
        " created, updated, meta) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
        (session_id, user, path_hash, path_enc, protocol, total, RECEIVING, now, now, meta),
    )


def set_total(conn: sqlite3.Connection, session_id: str, total: int) -> None:
    transition(state(conn, session_id), "append")
    conn.execute("UPDATE upload_sessions SET total=? WHERE id=?", (total, session_id))


def save_progress(conn: sqlite3.Connection, session_id: str, new_chunks: Sequence[tuple[int, int, bytes]],
                  tail: tuple[int, int, bytes] | None, received: int, now: float) -> None:
    """An append checkpoint: the chunks completed since the last one, the new tail
    (replacing the old one) and the bytes now held. :class:`NotFound` if the session
    was cancelled or expired meanwhile."""
    transition(state(conn, session_id), "append")
    conn.execute("DELETE FROM session_chunks WHERE session_id=? AND is_tail=1", (session_id,))
    conn.executemany(
        "INSERT OR REPLACE INTO session_chunks(session_id, offset, length, chunk_id, is_tail) VALUES (?, ?, ?, ?, 0)",
        [(session_id, o, n, c) for o, n, c in new_chunks],
    )
    if tail is not None:
        conn.execute(
            "INSERT OR REPLACE INTO session_chunks(session_id, offset, length, chunk_id, is_tail)"
            " VALUES (?, ?, ?, ?, 1)",
            (session_id, *tail),
        )
    conn.execute("UPDATE upload_sessions SET received=?, updated=? WHERE id=?", (received, now, session_id))


def end(conn: sqlite3.Connection, session_id: str, event: str) -> None:
    """Apply an ending event (complete, cancel, expire): the session's rows go."""
    transition(state(conn, session_id), event)
    conn.execute("DELETE FROM session_chunks WHERE session_id=?", (session_id,))
    conn.execute("DELETE FROM upload_sessions WHERE id=?", (session_id,))


def cancel_for_path(conn: sqlite3.Connection, user: str, path_hash: bytes) -> int:
    """A whole-file write supersedes every session for the path; returns how many."""
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM upload_sessions WHERE user_name=? AND path_hash=?", (user, path_hash))]
    for sid in ids:
        end(conn, sid, "cancel")
    return len(ids)


def expire_idle(conn: sqlite3.Connection, now: float, ttl: float) -> int:
    """gc: expire every session idle for longer than ``ttl``; returns how many."""
    ids = [r[0] for r in conn.execute("SELECT id FROM upload_sessions WHERE updated < ?", (now - ttl,))]
    for sid in ids:
        end(conn, sid, "expire")
    return len(ids)


def remove_user_sessions(conn: sqlite3.Connection, user: str) -> int:
    """A user is being removed: cancel every session of theirs; returns how many."""
    ids = [r[0] for r in conn.execute("SELECT id FROM upload_sessions WHERE user_name=?", (user,))]
    for sid in ids:
        end(conn, sid, "cancel")
    return len(ids)


# -- maintenance ---------------------------------------------------------------------


def count_sessions(conn: sqlite3.Connection) -> int:
    """Unfinished sessions in the repository, expired ones not yet removed included."""
    return int(conn.execute("SELECT count(*) FROM upload_sessions").fetchone()[0])


def sessions_missing_chunks(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
    """(session ID, chunk ID) of session chunks missing from the chunk index (check)."""
    return conn.execute(
        "SELECT sc.session_id, sc.chunk_id FROM session_chunks sc"
        " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = sc.chunk_id)"
    ).fetchall()
