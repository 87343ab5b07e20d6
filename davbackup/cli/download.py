"""`davbackup download URL LOCAL`: download a file or a folder tree, resuming partial files.

A remote folder is mirrored into the folder LOCAL (its contents, not the folder
itself, so running the command again only fetches what changed); a remote file
lands in LOCAL/NAME if LOCAL is a folder, else at LOCAL. A partial file (NAME.davbackup-part) from an interrupted run is continued
where it stopped if the remote file is unchanged. Exit codes as for upload.
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
from davbackup.client import Downloader, DownloadOptions, format_bytes


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("download", help="download files and folders (resumable)",
                            description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_arguments(parser)
    add_transfer_arguments(parser)
    parser.add_argument("url", metavar="URL", help="remote file or folder")
    parser.add_argument("local", metavar="LOCAL", type=Path, help="destination")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    remote, remote_path = open_remote(args, args.url)
    state = open_state(args)
    downloader = Downloader(remote, state, DownloadOptions(retries=args.retries, force=args.force),
                            progress_for(args))
    try:
        downloader.download(remote_path, args.local)
    finally:
        state.close()
        stats = downloader.stats
        if not args.quiet:
            resumed = f", {stats.resumed} resumed" if stats.resumed else ""
            failed = f", {stats.files_failed} failed" if stats.files_failed else ""
            print(f"downloaded {stats.files_received} file(s) ({format_bytes(stats.bytes_received)}{resumed}), "
                  f"{stats.files_skipped} unchanged{failed}")
    if stats.errors:
        for error in stats.errors:
            print(f"davbackup download: error: {error.message}", file=sys.stderr)
        return stats.errors[0].exit_code
    return 0
