"""`davbackup rebuild-index --repo DIR`: recreate missing chunk-index rows from packs."""

from __future__ import annotations

import argparse

from davbackup.cli.common import add_repo_arguments, open_repository
from davbackup.maintenance.rebuild import rebuild_index


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("rebuild-index", help="re-index chunks by scanning every pack")
    add_repo_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, mode="admin")
    try:
        report = rebuild_index(repo)
    finally:
        repo.close()
    print(
        f"rebuild-index: scanned {report.packs_scanned} packs, {report.blobs_seen} blobs; "
        f"added {report.chunks_added} chunk rows and {report.packs_added} pack rows; "
        f"{report.damaged_blobs} damaged blobs skipped"
    )
    return 1 if report.damaged_blobs else 0
