"""`davbackup migrate --repo DIR --catalog URL --packs URL [--to cluster|embedded]`: move
an embedded repository into PostgreSQL and an object store (davbackup/maintenance/migrate.py),
or back (davbackup/maintenance/migrate_back.py)."""

from __future__ import annotations

import argparse

from davbackup.cli.common import add_repo_arguments, read_passphrase
from davbackup.errors import UsageError
from davbackup.maintenance.migrate import MigrateReport, migrate
from davbackup.maintenance.migrate_back import migrate_to_embedded
from davbackup.repository import Repository


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "migrate",
        help="move a repository between one directory and PostgreSQL + an S3-compatible store",
        description="With --to cluster (the default): copy the embedded repository in --repo DIR (left "
        "unchanged) into a new repository whose catalog is the empty PostgreSQL database --catalog and whose "
        "packs go to --packs. With --to embedded: copy the repository at --catalog and --packs (left "
        "unchanged) into the new or empty directory --repo DIR. Every chunk is verified on the way; the "
        "same passphrases open the copy. Stop the server (every node) first.",
    )
    add_repo_arguments(parser)
    parser.add_argument("--to", choices=("cluster", "embedded"), default="cluster",
                        help="the direction: into --catalog/--packs (cluster), or into --repo (embedded)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.repo is None or args.catalog is None or args.packs is None:
        raise UsageError("migrate needs --repo DIR and --catalog URL --packs URL (the source and the target;"
                         " --to says which is which)")

    def progress(line: str) -> None:
        print(f"migrate: {line}", flush=True)

    if args.to == "embedded":
        source = Repository.open(None, read_passphrase(args), mode="read", packs_url=args.packs,
                                 catalog_url=args.catalog)
        try:
            report = migrate_to_embedded(source, args.repo, progress=progress)
        finally:
            source.close()
        _done(report, f"--repo {args.repo}")
        return 0
    source = Repository.open(args.repo, read_passphrase(args), mode="read")
    try:
        report = migrate(source, args.catalog, args.packs, progress=progress)
    finally:
        source.close()
    _done(report, f"--catalog {args.catalog} --packs {args.packs}")
    return 0


def _done(report: MigrateReport, where: str) -> None:
    print(f"migrate: done in {report.seconds:.1f} s: {report.packs} packs ({report.pack_bytes >> 20} MiB), "
          f"{report.chunks_verified} chunks verified, {report.rows} catalog rows; serve it with {where}")
