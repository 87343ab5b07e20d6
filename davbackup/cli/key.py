"""`davbackup key add|remove|list`: manage the passphrases that unlock the repository."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time

from davbackup.cli.common import add_repo_arguments, open_repository, read_passphrase
from davbackup.errors import UsageError

NEW_PASSPHRASE_ENV = "DAVBACKUP_NEW_PASSPHRASE"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("key", help="add, remove or list key slots (passphrases)")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a passphrase")
    add_repo_arguments(add)
    add.add_argument("--label", default="", help="a note to recognise the slot by")
    add.add_argument("--new-passphrase-file", help=f"file with the new passphrase (else ${NEW_PASSPHRASE_ENV} or a prompt)")
    rm = actions.add_parser("remove", help="remove a key slot")
    add_repo_arguments(rm)
    rm.add_argument("slot", help="slot ID as shown by `key list`")
    ls = actions.add_parser("list", help="list key slots")
    add_repo_arguments(ls)
    parser.set_defaults(handler=run)


def _new_passphrase(args: argparse.Namespace) -> str:
    if args.new_passphrase_file:
        with open(args.new_passphrase_file, encoding="utf-8") as f:
            value = f.read().rstrip("\r\n")
    elif os.environ.get(NEW_PASSPHRASE_ENV):
        value = os.environ[NEW_PASSPHRASE_ENV]
    elif sys.stdin.isatty():
        value = getpass.getpass("New passphrase: ")
        if getpass.getpass("Repeat new passphrase: ") != value:
            raise UsageError("the passphrases did not match")
    else:
        raise UsageError(f"no new passphrase: use --new-passphrase-file or ${NEW_PASSPHRASE_ENV}")
    if not value:
        raise UsageError("the new passphrase is empty")
    return value


def run(args: argparse.Namespace) -> int:
    passphrase = read_passphrase(args)
    repo = open_repository(args, mode="read", passphrase=passphrase)
    try:
        ring = repo.keyring()
        if args.action == "list":
            for slot in ring.slots():
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(slot.created))
                print(f"{slot.slot}  {created}  {slot.label}")
        elif args.action == "add":
            slot = ring.add(repo.keys, _new_passphrase(args), label=args.label)
            print(f"added key slot {slot.slot}")
        elif args.action == "remove":
            ring.remove(args.slot, passphrase)
            print(f"removed key slot {args.slot}")
    finally:
        repo.close()
    return 0
