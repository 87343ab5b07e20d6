"""`davbackup init --repo DIR` (or `--catalog URL --packs URL`): create a new repository."""

from __future__ import annotations

import argparse
import secrets

from davbackup.cli.common import add_repo_arguments, check_repo_arguments, parse_size, read_passphrase
from davbackup.config import ChunkerParams, RepoConfig
from davbackup.repository import Repository


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("init", help="create a new encrypted repository")
    add_repo_arguments(parser)
    parser.add_argument(
        "--chunker-params",
        metavar="MIN,AVG,MAX[,NORM]",
        type=chunker_params,
        help="content-defined chunk sizes, fixed for the repository's life (default "
        "128K,512K,2M,2: smaller chunks store less when large files change a little, "
        "larger ones mean fewer chunks to index and read)",
    )
    parser.set_defaults(handler=run)


def chunker_params(text: str) -> ChunkerParams:
    """``128K,512K,2M`` or ``128K,512K,2M,2`` -> :class:`ChunkerParams`."""
    fields = [part.strip() for part in text.split(",")]
    if len(fields) not in (3, 4):
        raise argparse.ArgumentTypeError(f"{text!r}: give MIN,AVG,MAX or MIN,AVG,MAX,NORM, e.g. 128K,512K,2M")
    sizes = [parse_size(part) for part in fields[:3]]
    if any(size is None for size in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: chunk sizes cannot be unlimited")
    try:
        normalization = int(fields[3]) if len(fields) == 4 else ChunkerParams.normalization
        return ChunkerParams(min_size=sizes[0], avg_size=sizes[1], max_size=sizes[2],  # type: ignore[arg-type]
                             normalization=normalization)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    check_repo_arguments(args)
    passphrase = read_passphrase(args, confirm=True)
    config = None
    if args.chunker_params is not None:
        config = RepoConfig(repo_id=secrets.token_hex(16), chunker=args.chunker_params)
    repo = Repository.init(args.repo, passphrase, config=config, packs_url=args.packs, catalog_url=args.catalog)
    try:
        print(f"created repository {repo.location.describe()} (id {repo.config.repo_id})")
        print("Keep the passphrase safe: without it the data cannot be decrypted.")
    finally:
        repo.close()
    return 0
