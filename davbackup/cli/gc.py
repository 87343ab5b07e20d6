"""`davbackup gc --repo DIR`: reclaim the space of unreferenced chunks."""

from __future__ import annotations

import argparse
from pathlib import Path

from davbackup.cli.common import add_repo_arguments, open_repository
from davbackup.cli.stats import human
from davbackup.maintenance.gc import collect_garbage
from davbackup.reserve import SpaceReserve


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("gc", help="remove unreferenced chunks and compact packs")
    add_repo_arguments(parser)
    parser.add_argument(
        "--grace", type=float, default=None,
        help="keep unreferenced chunks touched within this many seconds "
        "(default: 0 when no server runs, 3600 while one does)",
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="rewrite packs less than this share live")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # On a full disk gc needs room to open the catalog (its -wal and -shm files), to
    # write its changes and to copy packs: release the space reserve first.
    if args.repo is not None and Path(args.repo, "config.json").exists():
        SpaceReserve(Path(args.repo)).release_if_low()
    repo = open_repository(args, mode="admin")
    try:
        report = collect_garbage(repo, grace_seconds=args.grace, rewrite_threshold=args.threshold)
    finally:
        repo.close()
    print(
        f"gc: {report.chunks_deleted} chunks unreferenced, {report.packs_deleted} packs deleted, "
        f"{report.packs_rewritten} rewritten, {report.sessions_expired} upload sessions expired; "
        f"freed {human(report.bytes_freed)} ({human(report.bytes_before)} -> {human(report.bytes_after)}); "
        f"grace {report.grace_seconds:.0f}s"
    )
    pr = report.pruned
    print(
        f"gc: history retention dropped {pr.moments_dropped} points in time and {pr.states_dropped} old states;"
        f" {pr.versions_released} versions ({human(pr.bytes_released)}) released"
    )
    if report.trash_emptied or report.staging_dropped:
        print(f"gc: finished {report.trash_emptied} interrupted large deletions, dropped "
              f"{report.staging_dropped} interrupted large copies")
    if report.unreadable_chunks:
        print(f"gc: {report.unreadable_chunks} damaged chunks were left in place; run `davbackup check --read-data`")
        return 1
    return 0
