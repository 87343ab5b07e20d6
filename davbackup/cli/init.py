"""`davbackup init --repo DIR`: create a new repository."""

from __future__ import annotations

import argparse

from davbackup.cli.common import add_repo_arguments, read_passphrase
from davbackup.repository import Repository


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("init", help="create a new encrypted repository")
    add_repo_arguments(parser)
    parser.add_argument(
        "--packs",
        metavar="URL",
        help="keep packs, config and key slots in an S3-compatible store (s3://bucket/prefix; "
        "endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); "
        "the catalog stays in --repo",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    passphrase = read_passphrase(args, confirm=True)
    repo = Repository.init(args.repo, passphrase, packs_url=args.packs)
    try:
        print(f"created repository {repo.location.describe()} (id {repo.config.repo_id})")
        print("Keep the passphrase safe: without it the data cannot be decrypted.")
    finally:
        repo.close()
    return 0
