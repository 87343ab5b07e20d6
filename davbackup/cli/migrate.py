"""`davbackup migrate --repo DIR --catalog URL --packs URL`: move an embedded repository
into PostgreSQL and an object store (davbackup/maintenance/migrate.py)."""

from __future__ import annotations

import argparse

from davbackup.cli.common import add_repo_arguments, read_passphrase
from davbackup.errors import UsageError
from davbackup.maintenance.migrate import migrate
from davbackup.repository import Repository


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "migrate",
        help="copy an embedded repository into PostgreSQL and an S3-compatible store",
        description="Copy the repository in --repo DIR (left unchanged) into a new repository whose "
        "catalog is the empty PostgreSQL database --catalog and whose packs go to --packs, verifying "
        "every chunk. Stop the server first.",
    )
    add_repo_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.repo is None or args.catalog is None or args.packs is None:
        raise UsageError("migrate needs --repo DIR (the source) and --catalog URL --packs URL (the target)")
    source = Repository.open(args.repo, read_passphrase(args), mode="read")
    try:
        report = migrate(source, args.catalog, args.packs, progress=lambda line: print(f"migrate: {line}", flush=True))
    finally:
        source.close()
    print(f"migrate: done in {report.seconds:.1f} s: {report.packs} packs ({report.pack_bytes >> 20} MiB), "
          f"{report.chunks_verified} chunks verified, {report.rows} catalog rows; serve it with "
          f"--catalog {args.catalog} --packs {args.packs}")
    return 0
