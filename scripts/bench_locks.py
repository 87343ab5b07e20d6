#!/usr/bin/env python3
"""Benchmark of the lock index: lock queries with many locks held elsewhere, against
the same queries with no locks at all, in the same run.

Usage::

    python scripts/bench_locks.py [--locks N] [--queries N]

WsgiDAV asks the lock storage, for every resource a PROPFIND lists and for every
write, for the locks on a URL (and its parents) and below it. The storage keeps its
locks indexed by resource (provider/locks.py), so a query should cost the same
whether 0 or 10,000 locks are held on other resources; before the index, every
query scanned all locks under one mutex. Prints microseconds per query and the
ratio (target: close to 1, at most 2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from davbackup.repository import Repository  # noqa: E402
from provider.locks import LockLimits, RepositoryLockStorage  # noqa: E402
from provider.paths import ref_url  # noqa: E402


def _lock(user: str) -> dict:
    return {"type": "write", "scope": "shared", "depth": "0", "owner": b"<o/>",
            "timeout": 3600, "principal": user}


def _query(storage: RepositoryLockStorage, queries: int) -> float:
    """Median microseconds of one PROPFIND-like query set (the file and its parents)."""
    times = []
    for i in range(queries):
        url = ref_url("alice", f"/listed/f{i % 500}", is_collection=False)
        started = time.perf_counter()
        storage.get_lock_list(url, include_root=True, include_children=False, token_only=False)
        for parent in ("/alice/listed", "/alice"):
            storage.get_lock_list(parent, include_root=True, include_children=False, token_only=False)
        storage.get_lock_list(url, include_root=False, include_children=True, token_only=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            Repository.init(Path(tmp) / "r", "benchmark passphrase") as repo:
        repo.users.add("alice", "alice-password")
        storage = RepositoryLockStorage(repo, LockLimits(per_user=args.locks + 1))
        storage.open()
        empty = _query(storage, args.queries)
        started = time.perf_counter()
        for i in range(args.locks):
            path = f"/held/d{i // 100}/f{i % 100}"
            storage.create(ref_url("alice", path, is_collection=False), _lock("alice"))
        created = time.perf_counter() - started
        full = _query(storage, args.queries)
        print(f"{args.locks} locks created in {created:.1f} s (catalog write each)")
        print(f"query with 0 locks held:      {empty:8.1f} us")
        print(f"query with {args.locks} locks held: {full:8.1f} us")
        print(f"ratio: {full / empty:.2f} (target <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
