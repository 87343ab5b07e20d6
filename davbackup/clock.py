"""The wall clock every catalog change is stamped with (DESIGN.md §15).

History names points in time by this clock, and retention ages them by it. Tests
and drills can shift it with ``DAVBACKUP_CLOCK_OFFSET`` (seconds, may be negative)
so a server started with an offset writes history "in the past"; production never
sets it.
"""

from __future__ import annotations

import os
import time

_offset = float(os.environ.get("DAVBACKUP_CLOCK_OFFSET", "0") or 0)


def now() -> float:
    """Seconds since the epoch, UTC, shifted by the configured offset."""
    return time.time() + _offset


def set_offset(seconds: float) -> None:
    """Shift the clock of this process (tests only)."""
    global _offset
    _offset = float(seconds)
