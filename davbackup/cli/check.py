"""`davbackup check --repo DIR [--read-data]`: verify the repository."""

from __future__ import annotations

import argparse
import sys

from davbackup.cli.common import add_repo_arguments, open_repository
from davbackup.maintenance.check import check_repository

EXIT_PROBLEMS = 1


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("check", help="check catalog and packs for consistency")
    add_repo_arguments(parser)
    parser.add_argument("--read-data", action="store_true", help="also decrypt and verify every chunk")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, mode="read")
    try:
        report = check_repository(repo, read_data=args.read_data)
    finally:
        repo.close()
    for warning in report.warnings:
        print(f"warning: {warning}")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    verified = f", {report.chunks_verified} chunks verified" if args.read_data else ""
    summary = f"{report.files} files, {report.chunks} chunks, {report.packs} packs{verified}"
    if report.ok:
        print(f"check: no problems ({summary})")
        return 0
    print(f"check: {len(report.problems)} problem(s) found ({summary})", file=sys.stderr)
    return EXIT_PROBLEMS
