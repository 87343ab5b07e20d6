"""`davbackup ls URL`: list a remote folder (or show one file)."""

from __future__ import annotations

import argparse
import time

from davbackup.cli.client_common import add_connection_arguments, open_remote
from davbackup.client import RemoteEntry
from davbackup.errors import NotFound


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ls", help="list a remote folder")
    add_connection_arguments(parser)
    parser.add_argument("-R", "--recursive", action="store_true", help="list the whole tree")
    parser.add_argument("url", metavar="URL", help="remote folder or file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    remote, path = open_remote(args, args.url)
    entry = remote.stat(path)
    if entry is None:
        raise NotFound(f"{remote.origin}{path}: no such file or folder")
    if not entry.is_dir:
        print(_line(entry, entry.name))
        return 0
    entries = remote.walk(path) if args.recursive else (remote.list(path) or [])
    base = path.rstrip("/")
    for item in entries:
        print(_line(item, item.path[len(base) + 1:]))
    return 0


def _line(entry: RemoteEntry, name: str) -> str:
    kind = "d" if entry.is_dir else "-"
    size = "-" if entry.is_dir else str(entry.size)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.modified)) if entry.modified else "-"
    return f"{kind} {size:>12} {when}  {name}{'/' if entry.is_dir else ''}"
