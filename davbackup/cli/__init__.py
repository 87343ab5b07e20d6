"""The `davbackup` command: one module per subcommand, each with `register()`.

Every subcommand module exposes ``register(subparsers) -> None`` which adds its parser
and sets ``handler`` (a function taking the parsed namespace and returning an exit
code). Errors from the :mod:`davbackup.errors` hierarchy are reported as one line on
stderr and end the process with their ``exit_code``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from davbackup.errors import DavBackupError

COMMANDS = (
    "init",
    "key",
    "user",
    "check",
    "gc",
    "history",
    "restore",
    "stats",
    "rebuild_index",
    "serve",
    "upload",
    "download",
    "ls",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="davbackup",
        description="An encrypted, deduplicating WebDAV backup server.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"davbackup.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"davbackup.cli.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except DavBackupError as exc:
        print(f"davbackup {args.command}: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"davbackup {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    sys.exit(main())
