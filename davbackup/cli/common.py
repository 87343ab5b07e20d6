"""Helpers shared by CLI commands: repository options and reading secrets."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from davbackup.errors import UsageError
from davbackup.repository import Repository

PASSPHRASE_ENV = "DAVBACKUP_PASSPHRASE"


def add_repo_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--repo DIR``, or ``--catalog URL --packs URL`` for a repository whose catalog is
    in PostgreSQL and whose packs are in an S3-compatible store (``--repo`` is then
    only this process's local state, a temporary directory by default)."""
    parser.add_argument(
        "--repo", type=Path,
        help="repository directory" + (" (or --catalog and --packs)" if required else ""),
    )
    parser.add_argument(
        "--catalog", metavar="URL",
        help="the catalog in PostgreSQL (postgresql://user@host:port/db; password from PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument(
        "--packs", metavar="URL",
        help="packs, config and key slots in an S3-compatible store (s3://bucket/prefix; endpoint and "
        "credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)",
    )
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        help=f"file holding the passphrase (default: ${PASSPHRASE_ENV}, else a prompt)",
    )
    parser.set_defaults(repo_required=required)


def check_repo_arguments(args: argparse.Namespace) -> None:
    """A repository must be named: ``--repo``, or ``--catalog`` with ``--packs``."""
    if args.repo is None and getattr(args, "catalog", None) is None and getattr(args, "repo_required", True):
        raise UsageError("no repository: give --repo DIR, or --catalog URL and --packs URL")


def open_repository(args: argparse.Namespace, *, mode: str, passphrase: str | None = None) -> Repository:
    """The repository the command line names, opened in ``mode``."""
    check_repo_arguments(args)
    return Repository.open(
        args.repo, passphrase if passphrase is not None else read_passphrase(args), mode=mode,
        packs_url=getattr(args, "packs", None), catalog_url=getattr(args, "catalog", None),
    )


def read_passphrase(args: argparse.Namespace, *, confirm: bool = False) -> str:
    """The repository passphrase from --passphrase-file, the environment or a prompt."""
    path: Path | None = getattr(args, "passphrase_file", None)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read passphrase file {path}: {exc.strerror}") from exc
        passphrase = text.rstrip("\r\n")
    elif os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV]
    elif sys.stdin.isatty():
        passphrase = getpass.getpass("Repository passphrase: ")
        if confirm and getpass.getpass("Repeat passphrase: ") != passphrase:
            raise UsageError("the passphrases did not match")
    else:
        raise UsageError(
            f"no passphrase: set {PASSPHRASE_ENV}, pass --passphrase-file, or run on a terminal"
        )
    if not passphrase:
        raise UsageError("the passphrase is empty")
    return passphrase


def read_secret(prompt: str, *, confirm: bool = False) -> str:
    """A password from stdin when it is not a terminal, else an interactive prompt."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        secret = line.rstrip("\r\n")
    else:
        secret = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat: ") != secret:
            raise UsageError("the entries did not match")
    if not secret:
        raise UsageError("empty password")
    return secret


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size(text: str) -> int | None:
    """``100G`` -> bytes (binary units K, M, G, T, P, with an optional ``B``/``iB``);
    ``none`` or ``unlimited`` -> None."""
    raw = text.strip()
    if raw.lower() in ("none", "unlimited"):
        return None
    value = raw.upper()
    for suffix in ("IB", "B"):
        if value.endswith(suffix) and len(value) > len(suffix):
            value = value[: -len(suffix)]
            break
    unit = value[-1] if value and value[-1] in "KMGTP" else ""
    try:
        amount = float(value[: len(value) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 500M, 100G, 2T or none)") from None
    if not 0 <= amount < float("inf"):
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(amount * _UNITS[unit])
