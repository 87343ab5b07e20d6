"""`davbackup restore --repo DIR --user U --at T [--path P] [--to DEST]`.

Restores a file or a folder of a user's history into the live tree, in the catalog
only (no data is copied), in one transaction, as a new version: what it replaces
stays in history. The same as a WebDAV ``COPY /.history/T/P`` to ``DEST``.
"""

from __future__ import annotations

import argparse

from davbackup.cli.common import add_repo_arguments, open_repository
from davbackup.history import format_moment, parse_moment


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("restore", help="restore a file or folder from history")
    add_repo_arguments(parser)
    parser.add_argument("--user", required=True)
    parser.add_argument("--at", required=True, type=_moment, help="point in time, UTC: 2026-12-03T073000Z")
    parser.add_argument("--path", default="/", help="what to restore (default: the whole tree)")
    parser.add_argument("--to", default=None, help="where to put it (default: where it was, replacing it)")
    parser.set_defaults(handler=run)


def _moment(text: str) -> int:
    try:
        return parse_moment(text)
    except Exception as exc:  # noqa: BLE001 - argparse reports it as a usage error
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, mode="admin")
    try:
        history = repo.namespace(args.user).history()
        dest = args.to if args.to is not None else args.path
        created = history.restore(args.at, args.path, dest, overwrite=True)
    finally:
        repo.close()
    print(f"restored {args.path} as of {format_moment(args.at)} to {dest} ({'created' if created else 'replaced'})")
    return 0
