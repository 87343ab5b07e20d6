"""`davbackup history show|set|prune`: the administrator's view of history and retention.

History can only be shortened here, on the server machine, with the repository's
passphrase: no WebDAV request can remove what retention keeps (DESIGN.md §15).
"""

from __future__ import annotations

import argparse

from davbackup import clock
from davbackup.cli.common import add_repo_arguments, open_repository
from davbackup.cli.stats import human
from davbackup.history import format_moment, history_usage
from davbackup.repository import Repository
from davbackup.retention import RetentionPolicy, load_policy, prune, save_policy


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("history", help="show history, set retention, prune")
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="retention policy and each user's history")
    add_repo_arguments(show)
    show.add_argument("--user", help="also list this user's points in time")
    set_ = actions.add_parser("set", help="change the retention policy (ages in days)")
    add_repo_arguments(set_)
    set_.add_argument("--keep-all", type=float, help="keep every point in time younger than this (default 30)")
    set_.add_argument("--daily", type=float, help="then one per day up to this age (default 90)")
    set_.add_argument("--weekly", type=float, help="then one per week up to this age (default 730)")
    pr = actions.add_parser("prune", help="drop what the retention policy does not keep")
    add_repo_arguments(pr)
    pr.add_argument("--dry-run", action="store_true", help="only show what would go")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    mode = "read" if args.action == "show" or getattr(args, "dry_run", False) else "admin"
    repo = open_repository(args, mode=mode)
    try:
        if args.action == "show":
            _show(repo, args.user)
        elif args.action == "set":
            old = load_policy(repo.catalog)
            policy = RetentionPolicy(
                keep_all_days=old.keep_all_days if args.keep_all is None else args.keep_all,
                daily_days=old.daily_days if args.daily is None else args.daily,
                weekly_days=old.weekly_days if args.weekly is None else args.weekly,
            )
            save_policy(repo.catalog, policy)
            print(f"retention: {_describe(policy)}")
        else:
            report = prune(repo.catalog, load_policy(repo.catalog), clock.now(), dry_run=args.dry_run)
            verb = "would drop" if args.dry_run else "dropped"
            print(
                f"history prune: {verb} {report.moments_dropped} points in time, {report.states_dropped} file"
                f" and folder states, {report.properties_dropped} property values; {report.versions_released}"
                f" versions ({human(report.bytes_released)}) {'would be' if args.dry_run else 'are now'}"
                " unreferenced" + ("" if args.dry_run else " (`davbackup gc` reclaims their space)")
            )
    finally:
        repo.close()
    return 0


def _describe(p: RetentionPolicy) -> str:
    return (
        f"every point in time for {p.keep_all_days:g} days, one per day up to {p.daily_days:g} days,"
        f" one per week up to {p.weekly_days:g} days"
    )


def _show(repo: Repository, only: str | None) -> None:
    print(f"retention: {_describe(load_policy(repo.catalog))}")
    for user in repo.users.list():
        if only is not None and user.name != only:
            continue
        used, quota = repo.users.usage(user.name)
        h = history_usage(repo.catalog, repo.users.root_id(user.name))
        span = f"{format_moment(h.oldest)} .. {format_moment(h.newest)}" if h.oldest is not None and h.newest is not None else "-"
        print(
            f"{user.name}: live {human(used)} of {'unlimited' if quota is None else human(quota)};"
            f" history {h.moments} points in time ({span}), {h.versions} older versions, {human(h.bytes)}"
        )
        if only is not None:
            for second in repo.namespace(user.name).history().moments():
                print(f"  {format_moment(second)}")
