"""Where the client's user name and password come from (never from argv).

Order: the user from ``--user`` (else the netrc entry's login); the password from
``$DAVBACKUP_PASSWORD``, else the netrc file (``--netrc FILE`` or ``~/.netrc``; the
entry for the URL's host), else a prompt on a terminal.
"""

from __future__ import annotations

import getpass
import netrc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from davbackup.errors import UsageError

PASSWORD_ENV = "DAVBACKUP_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(user={self.user!r})"


def resolve_credentials(url: str, user: str | None, netrc_file: Path | None = None,
                        *, interactive: bool | None = None) -> Credentials:
    """The credentials for ``url``; :class:`UsageError` if none can be found."""
    host = urlsplit(url).hostname or ""
    entry = _netrc_entry(host, netrc_file)
    if user is None and entry is not None:
        user = entry[0]
    if not user:
        raise UsageError(f"no user name for {host}: pass --user or add a netrc entry")
    password = os.environ.get(PASSWORD_ENV)
    if not password and entry is not None and entry[0] == user:
        password = entry[1]
    if not password:
        if interactive is None:
            interactive = sys.stdin.isatty()
        if not interactive:
            raise UsageError(
                f"no password for {user}@{host}: set {PASSWORD_ENV}, use a netrc file, or run on a terminal"
            )
        password = getpass.getpass(f"Password for {user}@{host}: ")
    if not password:
        raise UsageError("empty password")
    return Credentials(user, password)


def _netrc_entry(host: str, netrc_file: Path | None) -> tuple[str, str] | None:
    path = netrc_file if netrc_file is not None else Path.home() / ".netrc"
    if not path.exists():
        if netrc_file is not None:
            raise UsageError(f"netrc file {netrc_file} does not exist")
        return None
    try:
        auth = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        raise UsageError(f"cannot read netrc file {path}: {exc}") from exc
    if auth is None:
        return None
    login, _account, password = auth
    return (login or "", password or "")
