"""Retention: which points in time history keeps, and pruning the rest (DESIGN.md §15.4).

The policy is the administrator's alone: it is stored in the catalog (``meta`` key
``retention``), changed with ``davbackup history set`` and applied by
``davbackup history prune`` and by ``gc``. No WebDAV request can shorten history.

By age of a moment (a second in which the user's tree changed), measured from now:

* younger than ``keep_all_days`` (30): every moment is kept;
* younger than ``daily_days`` (90): the newest moment of each UTC day is kept;
* younger than ``weekly_days`` (730): the newest moment of each ISO week is kept;
* older: nothing is kept (to keep weekly moments "forever", use a large number).

A state of a file or folder that was replaced or deleted is kept if it was current
at the end of some kept moment, or if it ended less than ``keep_all_days`` ago. The
live tree is never touched. Versions no state points at any more become orphans that
``gc`` reclaims after its grace period.
"""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from davbackup.catalog import Catalog, read_meta, write_meta
from davbackup.errors import UsageError
from davbackup.tree import drop_version_if_unused
from davbackup.users import root_ids
from davbackup.versions import orphan_state

DAY = 86400


@dataclass(frozen=True)
class RetentionPolicy:
    keep_all_days: float = 30
    daily_days: float = 90
    weekly_days: float = 730

    def __post_init__(self) -> None:
        if not 0 <= self.keep_all_days <= self.daily_days <= self.weekly_days:
            raise UsageError("retention: need 0 <= keep-all <= daily <= weekly (days)")

    def kept(self, moments: list[int], now: float) -> list[int]:
        """The moments this policy keeps (sorted)."""
        keep: set[int] = set()
        newest_in: dict[tuple[str, int, int], int] = {}
        for second in moments:
            age = now - second
            if age < self.keep_all_days * DAY:
                keep.add(second)
                continue
            day = datetime.fromtimestamp(second, timezone.utc)
            if age < self.daily_days * DAY:
                key = ("d", day.toordinal(), 0)
            elif age < self.weekly_days * DAY:
                iso = day.isocalendar()
                key = ("w", iso.year, iso.week)
            else:
                continue
            if second > newest_in.get(key, -1):
                newest_in[key] = second
        keep.update(newest_in.values())
        return sorted(keep)


def load_policy(catalog: Catalog) -> RetentionPolicy:
    row = read_meta(catalog.reader(), "retention")
    if row is None:
        return RetentionPolicy()
    return RetentionPolicy(**json.loads(row))


def save_policy(catalog: Catalog, policy: RetentionPolicy) -> None:
    text = json.dumps(asdict(policy), sort_keys=True)
    catalog.write(lambda conn: write_meta(conn, "retention", text))


@dataclass
class PruneReport:
    moments_dropped: int = 0
    states_dropped: int = 0
    properties_dropped: int = 0
    versions_released: int = 0
    bytes_released: int = 0  # logical size of the versions no longer referenced


def prune(catalog: Catalog, policy: RetentionPolicy, now: float, *, dry_run: bool = False) -> PruneReport:
    """Apply ``policy`` to every user's history. With ``dry_run`` nothing changes."""
    report = PruneReport()
    owners = root_ids(catalog.reader())
    for owner in owners:
        if dry_run:
            with catalog.snapshot() as conn:
                _prune_owner(conn, owner, policy, now, report, apply=False)
        else:
            # One transaction per user keeps the writer free for others in between.
            catalog.write(lambda conn, o=owner: _prune_owner(conn, o, policy, now, report, apply=True))  # type: ignore[misc]
    return report


def _prune_owner(
    conn: sqlite3.Connection, owner: int, policy: RetentionPolicy, now: float, report: PruneReport, *, apply: bool
) -> None:
    # Over 60 lines on purpose: what goes (moments, states, properties) and what that
    # releases (versions) are decided in one pass, the same for a dry run and a real one.
    moments = [r[0] for r in conn.execute("SELECT second FROM moments WHERE owner=? ORDER BY second", (owner,))]
    kept = policy.kept(moments, now)
    kept_set = set(kept)
    dropped = [m for m in moments if m not in kept_set]
    report.moments_dropped += len(dropped)
    recent = now - policy.keep_all_days * DAY

    def needed(born: float, died: float) -> bool:
        if died >= recent:
            return True
        lo, hi = math.floor(born), math.floor(died) - 1  # kept moments whose end it spans
        i = bisect.bisect_left(kept, lo)
        return i < len(kept) and kept[i] <= hi

    gone_states = [
        (rowid, version_id)
        for rowid, version_id, born, died in conn.execute(
            "SELECT rowid, version_id, born, died FROM node_history WHERE owner=? AND died < ?", (owner, recent)
        ).fetchall()
        if not needed(born, died)
    ]
    gone_props = [
        rowid
        for rowid, born, died in conn.execute(
            "SELECT rowid, born, died FROM props_history WHERE owner=? AND died < ?", (owner, recent)
        ).fetchall()
        if not needed(born, died)
    ]
    report.states_dropped += len(gone_states)
    report.properties_dropped += len(gone_props)
    candidates = {vid for _, vid in gone_states if vid is not None}
    gone_rowids = {rowid for rowid, _ in gone_states}
    if not apply:
        for vid in candidates:
            refs = conn.execute(
                "SELECT (SELECT count(*) FROM nodes WHERE version_id=?),"
                " (SELECT group_concat(rowid) FROM node_history WHERE version_id=?)",
                (vid, vid),
            ).fetchone()
            others = [int(r) for r in (refs[1] or "").split(",") if r and int(r) not in gone_rowids]
            if refs[0] == 0 and not others:
                report.versions_released += 1
                state = orphan_state(conn, vid)
                report.bytes_released += state[1] if state is not None else 0
        return
    for start in range(0, len(gone_states), 500):
        part = [rowid for rowid, _ in gone_states[start : start + 500]]
        conn.execute(f"DELETE FROM node_history WHERE rowid IN ({','.join('?' * len(part))})", part)
    for start in range(0, len(gone_props), 500):
        part = gone_props[start : start + 500]
        conn.execute(f"DELETE FROM props_history WHERE rowid IN ({','.join('?' * len(part))})", part)
    conn.executemany("DELETE FROM moments WHERE owner=? AND second=?", [(owner, m) for m in dropped])
    for vid in candidates:
        before = orphan_state(conn, vid)
        drop_version_if_unused(conn, vid, now)
        after = orphan_state(conn, vid)
        if before is not None and before[0] is None and after is not None and after[0] is not None:
            report.versions_released += 1
            report.bytes_released += after[1]
