"""`davbackup stats --repo DIR`: sizes, dedup and compression ratios."""

from __future__ import annotations

import argparse

from davbackup.cli.common import add_repo_arguments, open_repository
from davbackup.history import history_usage
from davbackup.maintenance.stats import repository_stats
from davbackup.repository import Repository


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("stats", help="show repository statistics")
    add_repo_arguments(parser)
    parser.add_argument("--user", help="show one user's live bytes, quota and history instead")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, mode="read")
    try:
        if args.user:
            return _user_stats(repo, args.user)
        s = repository_stats(repo)
    finally:
        repo.close()
    rows = [
        ("users", str(s.users)),
        ("files / folders", f"{s.files} / {s.folders}"),
        ("logical size", human(s.logical_bytes)),
        ("unique data", human(s.unique_bytes)),
        ("stored (packs)", human(s.stored_bytes)),
        ("dedup ratio", f"{s.dedup_ratio:.2f}x"),
        ("compression ratio", f"{s.compression_ratio:.2f}x"),
        ("chunks", str(s.chunk_count)),
        ("packs", str(s.pack_count)),
        ("open upload sessions", str(s.open_sessions)),
    ]
    for key, value in rows:
        print(f"{key:22} {value}")
    return 0


def _user_stats(repo: Repository, name: str) -> int:
    used, quota = repo.users.usage(name)
    h = history_usage(repo.catalog, repo.users.root_id(name))
    rows = [
        ("user", name),
        ("live files", human(used)),
        ("quota", "unlimited" if quota is None else f"{human(quota)} ({human(max(0, quota - used))} free)"),
        ("points in time", str(h.moments)),
        ("history versions", str(h.versions)),
        ("history size", f"{human(h.bytes)} (logical; not counted in the quota)"),
    ]
    for key, value in rows:
        print(f"{key:22} {value}")
    return 0
