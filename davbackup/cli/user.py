"""`davbackup user add|passwd|remove|list|role|quota`: manage WebDAV users.

Passwords are read from stdin when it is not a terminal, else prompted; never argv.
These commands change only the catalog and may run while the server is serving.
"""

from __future__ import annotations

import argparse
import time

from davbackup.cli.common import add_repo_arguments, open_repository, parse_size, read_secret
from davbackup.cli.stats import human


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("user", help="manage users")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user (password on stdin or prompted)")
    add_repo_arguments(add)
    add.add_argument("name")
    add.add_argument("--role", choices=("rw", "ro"), default="rw", help="rw: read-write (default), ro: read-only")
    add.add_argument("--quota", type=parse_size, default=None, help="limit of live bytes, e.g. 100G (default: none)")
    quota = actions.add_parser("quota", help="show or set a user's quota (e.g. 100G, or 'none')")
    add_repo_arguments(quota)
    quota.add_argument("name")
    quota.add_argument("--quota", type=parse_size, default=False, dest="quota",
                       help="new limit of live bytes (100G, 1.5T, 500M, or 'none')")
    pw = actions.add_parser("passwd", help="change a user's password")
    add_repo_arguments(pw)
    pw.add_argument("name")
    role = actions.add_parser("role", help="change a user's role")
    add_repo_arguments(role)
    role.add_argument("name")
    role.add_argument("role", choices=("rw", "ro"))
    rm = actions.add_parser("remove", help="remove a user and all their files")
    add_repo_arguments(rm)
    rm.add_argument("name")
    ls = actions.add_parser("list", help="list users")
    add_repo_arguments(ls)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repository(args, mode="admin")
    try:
        users = repo.users
        if args.action == "add":
            users.add(args.name, read_secret(f"Password for {args.name}: ", confirm=True), args.role, args.quota)
            print(f"added user {args.name} ({args.role})")
        elif args.action == "quota":
            if args.quota is not False:
                users.set_quota(args.name, args.quota)
            used, limit = users.usage(args.name)
            print(f"{args.name}: {human(used)} used of {'unlimited' if limit is None else human(limit)}")
        elif args.action == "passwd":
            users.set_password(args.name, read_secret(f"New password for {args.name}: ", confirm=True))
            print(f"changed the password of {args.name}")
        elif args.action == "role":
            users.set_role(args.name, args.role)
            print(f"{args.name} is now {args.role}")
        elif args.action == "remove":
            users.remove(args.name)
            print(f"removed user {args.name} and their files (run `davbackup gc` to reclaim space)")
        elif args.action == "list":
            for user in users.list():
                created = time.strftime("%Y-%m-%d", time.localtime(user.created))
                used, limit = users.usage(user.name)
                quota = "unlimited" if limit is None else human(limit)
                print(f"{user.name}\t{user.role}\t{created}\t{human(used)} of {quota}")
    finally:
        repo.close()
    return 0
