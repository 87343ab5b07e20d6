"""`davbackup upgrade --repo DIR`: move a repository to the current format version."""

from __future__ import annotations

import argparse

from davbackup.cli.common import add_repo_arguments, open_repository
from davbackup.maintenance.upgrade import upgrade_format


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "upgrade", help="move a repository to the current format (older davbackup then refuses it)")
    add_repo_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, mode="admin")  # the passphrase proves the right to change it
    try:
        before, after = upgrade_format(repo)
    finally:
        repo.close()
    if before == after:
        print(f"upgrade: the repository is already of format {after}; nothing to do")
    else:
        print(f"upgrade: format {before} -> {after}. Stored data is unchanged and reads as before; "
              "servers started from now on seal large uncompressed chunks in segments (ranged reads "
              "verify only what they send). Restart running servers. davbackup releases before "
              "format 2 refuse this repository from now on.")
    return 0
