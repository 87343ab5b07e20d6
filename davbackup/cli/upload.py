"""`davbackup upload URL LOCAL...`: upload files and folder trees, resuming large files.

Each LOCAL goes into the remote folder URL (created if missing): a file as
URL/NAME, a folder as the tree URL/NAME/... with --jobs files at a time. Files
over 4 MiB go up as range-PUT parts that resume after a dropped connection or a
restart of this command, smaller ones in one PUT; unchanged files are skipped
(see davbackup/client/state.py). Exit codes: 0 done, 1 server error,
2 usage, 3 a file failed (not found, conflict, digest), 4 no connection, 5 login
refused or forbidden, 6 locked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from davbackup.cli.client_common import (
    add_connection_arguments,
    add_transfer_arguments,
    open_remote,
    open_state,
    progress_for,
)
from davbackup.client import Uploader, UploadOptions, format_bytes, parse_size
from davbackup.client.upload import DEFAULT_JOBS, DEFAULT_PART_SIZE
from davbackup.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("upload", help="upload files and folders (resumable)",
                            description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_arguments(parser)
    add_transfer_arguments(parser)
    parser.add_argument("--part-size", type=_size, default=DEFAULT_PART_SIZE,
                        help="bytes per range-PUT part, e.g. 64M (default 64M)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"files of a folder tree sent at the same time (default {DEFAULT_JOBS})")
    parser.add_argument("url", metavar="URL", help="remote folder, e.g. https://host:8080/backups")
    parser.add_argument("local", metavar="LOCAL", nargs="+", type=Path, help="files or folders")
    parser.set_defaults(handler=run)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def run(args: argparse.Namespace) -> int:
    remote, remote_dir = open_remote(args, args.url)
    state = open_state(args)
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    uploader = Uploader(remote, state, UploadOptions(part_size=args.part_size, retries=args.retries,
                                                     force=args.force, jobs=args.jobs), progress_for(args))
    try:
        for local in args.local:
            uploader.upload(local, remote_dir)
    finally:
        state.close()
        stats = uploader.stats
        if not args.quiet:
            resumed = f", {stats.resumed} resumed" if stats.resumed else ""
            failed = f", {stats.files_failed} failed" if stats.files_failed else ""
            print(f"uploaded {stats.files_sent} file(s) ({format_bytes(stats.bytes_sent)} sent{resumed}), "
                  f"{stats.files_skipped} unchanged{failed}")
    if stats.errors:
        for error in stats.errors:
            print(f"davbackup upload: error: {error.message}", file=sys.stderr)
        return stats.errors[0].exit_code
    return 0
