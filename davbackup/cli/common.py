"""Helpers shared by CLI commands: reading secrets and opening the repository."""

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
    parser.add_argument("--repo", required=required, type=Path, help="repository directory")
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        help=f"file holding the passphrase (default: ${PASSPHRASE_ENV}, else a prompt)",
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


def open_repository(args: argparse.Namespace) -> Repository:
    return Repository.open(args.repo, read_passphrase(args))
