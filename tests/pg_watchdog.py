"""Stop a throwaway PostgreSQL and delete its directory once the process that started it is gone.

``tests/services.py`` (:class:`ThrowawayPostgres`, also used by the benchmarks) runs
this file detached, in a session of its own, right after ``pg_ctl start``::

    python tests/pg_watchdog.py PID START_TICKS BASE PG_CTL [RUN_AS...]

It checks once a second whether process ``PID`` (whose start time in clock ticks
since boot is ``START_TICKS``, so that a reused PID does not count) still runs. When
it is gone (a test run killed by a timeout, SIGKILL, a closed terminal) and ``BASE``
still exists, the server is stopped (``pg_ctl stop -m immediate`` on ``BASE/data``,
run through ``RUN_AS``, e.g. ``runuser -u postgres --``) and ``BASE`` removed. When
``BASE`` disappears first (the normal stop), it just exits. It is started before
``initdb``, so a run killed while the server starts leaves nothing either. The same job as
``scripts/ceph-throwaway --watch-pid`` does for Ceph. Standard library only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

POLL_SECONDS = 1.0


def start_ticks(pid: int) -> int | None:
    """The start time of a running process (field 22 of /proc/PID/stat); None when
    it does not run (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":  # state, the first field after the command name
        return None
    return int(fields[19])


def watch(pid: int, ticks: int, base: Path, pg_ctl: str, run_as: list[str]) -> None:
    data = base / "data"
    while start_ticks(pid) == ticks and base.exists():
        time.sleep(POLL_SECONDS)
    if not base.exists():
        return  # stopped and removed by its owner
    try:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass  # not running (or never answered): the files go anyway
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    watch(int(argv[1]), int(argv[2]), Path(argv[3]), argv[4], argv[5:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
