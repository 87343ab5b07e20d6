"""`davbackup init --repo DIR`: create a new repository."""

from __future__ import annotations

import argparse

from davbackup.cli.common import add_repo_arguments, read_passphrase
from davbackup.repository import Repository


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("init", help="create a new encrypted repository")
    add_repo_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    passphrase = read_passphrase(args, confirm=True)
    repo = Repository.init(args.repo, passphrase)
    try:
        print(f"created repository {args.repo} (id {repo.config.repo_id})")
        print("Keep the passphrase safe: without it the data cannot be decrypted.")
    finally:
        repo.close()
    return 0
