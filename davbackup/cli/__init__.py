"""The `davbackup` command: one module per subcommand, each with `register()`.

Every subcommand module exposes ``register(subparsers) -> None`` which adds its parser
and sets ``handler`` (a function taking the parsed namespace and returning an exit
code). Errors from the :mod:`davbackup.errors` hierarchy are reported as one line on
stderr and end the process with their ``exit_code``.

The client commands (``upload``, ``download``, ``ls``) need the optional
``davbackup[client]`` dependencies. Without them the command is still listed, and
running it says what to install (exit code 2) instead of failing with a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from davbackup.errors import DavBackupError, UsageError

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
    "migrate",
    "recover",
    "upgrade",
    "serve",
    "upload",
    "download",
    "ls",
)
#: commands that need the ``client`` extra, and the top-level modules it provides
CLIENT_COMMANDS = {
    "upload": "upload files and folders (resumable)",
    "download": "download files and folders (resumable)",
    "ls": "list a remote folder",
}
CLIENT_MODULES = frozenset({"requests", "webdav3", "tqdm"})


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or (given the command line ``argv``) of the one
    command it names: the other command modules are then not imported (the server
    does not load PostgreSQL's driver, ``davbackup upload`` starts ~0.1 s sooner)."""
    parser = argparse.ArgumentParser(
        prog="davbackup",
        description="An encrypted, deduplicating WebDAV backup server.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _named_command(argv) or COMMANDS:
        try:
            module = importlib.import_module(f"davbackup.cli.{name}")
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if name not in CLIENT_COMMANDS or missing not in CLIENT_MODULES:
                raise
            _register_without_client(sub, name, missing)
            continue
        module.register(sub)
    return parser


def _named_command(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The module of the command ``argv`` names (its first word not an option), or ()."""
    if argv is None:
        return ()
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    name = (word or "").replace("-", "_")
    return (name,) if name in COMMANDS else ()


def _register_without_client(sub: argparse._SubParsersAction, name: str, missing: str) -> None:
    """A stand-in for a client command whose dependencies are not installed."""
    parser = sub.add_parser(name, help=f"{CLIENT_COMMANDS[name]} (needs davbackup[client])")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def handler(args: argparse.Namespace) -> int:
        raise UsageError(
            f"this command needs the HTTP client, which is not installed (no module {missing!r}): "
            "pip install 'davbackup[client]'"
        )

    parser.set_defaults(handler=handler)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
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
    if sys.argv[1:2] == ["serve"]:
        # before anything is imported: the allocator settings of a long-running server
        # work best when the first large blocks are already placed by them
        from davbackup.cli.malloc_tuning import tune_malloc

        tune_malloc()
    sys.exit(main())
