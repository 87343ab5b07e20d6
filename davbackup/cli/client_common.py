"""Options shared by the client commands (upload, download, ls) and opening the server."""

from __future__ import annotations

import argparse
from pathlib import Path

from davbackup.client import ClientState, Progress, Remote, resolve_credentials, split_url


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="user name (default: the netrc entry's login)")
    parser.add_argument("--netrc", type=Path, help="netrc file with the password (default: ~/.netrc); "
                        "else $DAVBACKUP_PASSWORD, else a prompt")
    parser.add_argument("--ca-cert", type=Path, help="PEM certificate to trust (a self-signed server)")
    parser.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")


def add_transfer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retries", type=int, default=8,
                        help="retries after a failure that made no progress (default 8)")
    parser.add_argument("--force", action="store_true", help="transfer files even if they look unchanged")
    parser.add_argument("--state", type=Path,
                        help="state file remembering transfers (default ~/.local/state/davbackup/client.sqlite)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, no summary")


def open_remote(args: argparse.Namespace, url: str) -> tuple[Remote, str]:
    """The server of ``url`` with credentials, and the URL's path."""
    origin, path = split_url(url)
    credentials = resolve_credentials(url, args.user, args.netrc)
    verify: bool | str = True
    if args.insecure:
        verify = False
    elif args.ca_cert is not None:
        verify = str(args.ca_cert)
    return Remote(origin, credentials, verify=verify), path


def open_state(args: argparse.Namespace) -> ClientState:
    return ClientState(args.state)


def progress_for(args: argparse.Namespace) -> Progress:
    return Progress(False if args.quiet else None)
