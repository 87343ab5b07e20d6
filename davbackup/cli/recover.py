"""`davbackup recover --repo DIR [--force]`: rebuild the catalog from the packs alone."""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sys
import tempfile
from pathlib import Path

from davbackup.cli.common import add_repo_arguments, read_passphrase
from davbackup.errors import Locked, UsageError
from davbackup.keys import KeyRing
from davbackup.location import PackLocation, recorded_packs_url
from davbackup.maintenance.recover import RecoverReport, recover
from davbackup.maintenance.recover_pg import recover_catalog
from davbackup.repository import Repository


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "recover", help="rebuild a missing or damaged catalog from config.json, the key files and the packs"
    )
    add_repo_arguments(parser)
    parser.add_argument(
        "--force", action="store_true",
        help="replace an existing catalog (it is moved aside: catalog.sqlite.before-recover-<time>, or in"
        " PostgreSQL the schema davbackup_before_recover_<time>)",
    )
    parser.set_defaults(handler=run)


def _progress(text: str) -> None:
    print(f"recover: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "catalog", None) is not None:
        return _run_pg(args)
    if args.repo is None:
        raise UsageError("recover rebuilds the SQLite catalog in --repo DIR (with --packs s3://... when DIR was"
                         " lost), or a PostgreSQL catalog: --catalog URL --packs URL")
    root = Path(args.repo)
    passphrase = read_passphrase(args)
    if args.packs and recorded_packs_url(root) is None:
        # The whole directory was lost: the object store is the backup. Remember where
        # it is once it proves to hold a repository.
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        found = PackLocation(root, args.packs)
        Repository.read_config(root, found)
        found.record()
    location, config, master = Repository.unlock(root, passphrase, args.packs)
    lock_fd = os.open(root / "writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise Locked(f"{root}: a server or another process is writing to this repository; stop it first") from exc
        storage = location.storage()
        try:
            report = recover(
                root, storage, master, force=args.force, progress=_progress,
                open_repo=lambda path: Repository(root, config, master, "admin", location, catalog_path=path),
            )
        finally:
            storage.close()
    finally:
        os.close(lock_fd)
    if report.moved_aside is not None:
        print(f"recover: the old catalog was moved aside to {report.moved_aside}")
    return _summary(report)


def _run_pg(args: argparse.Namespace) -> int:
    """A catalog in PostgreSQL, rebuilt from the packs (``--packs``, or in ``--repo``)."""
    if args.packs is None and args.repo is None:
        raise UsageError("--catalog needs --packs (s3://bucket/prefix) or --repo (packs in that directory)")
    passphrase = read_passphrase(args)
    temporary = args.repo is None
    root = Path(tempfile.mkdtemp(prefix="davbackup-recover-")) if temporary else Path(args.repo)
    try:
        location = PackLocation(root, args.packs)
        config = Repository.read_config(root, location)
        master, _slot = KeyRing(location.meta, config.repo_id).unlock(passphrase)
        report, aside = recover_catalog(args.catalog, location, config, master, force=args.force,
                                        progress=_progress, scratch_parent=None if temporary else root)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    if aside is not None:
        print(f"recover: the old catalog was moved aside to the schema {aside} of that database")
    return _summary(report)


def _summary(report: RecoverReport) -> int:
    seq = f"checkpoint at record {report.checkpoint_seq}" if report.checkpoint_seq is not None else "no checkpoint"
    print(
        f"recover: scanned {report.packs} packs; {seq}, {report.records_applied} journal records replayed"
        f" (up to record {report.last_seq}); {report.chunks} chunks indexed"
    )
    if report.superseded:
        print(f"recover: {report.superseded} journal records were copies, or of transactions that did not commit")
    print(
        f"recover: {report.users} users, {report.files} files, {report.folders} folders, {report.versions} versions"
        f" ({report.history_states} states in history), {report.live_bytes} bytes in live files"
    )
    print("recover: locks and unfinished upload sessions are not kept in the packs and were not recovered")
    for problem in report.problems:
        print(f"recover: could not place: {problem}")
    return 1 if report.problems else 0
