"""`davbackup serve`: serve a repository over WebDAV (the only command importing provider/).

Settings come from defaults, then the YAML file of ``--config``, then the command
line. Without a repository (no ``--repo``, none in the file) the server uses
``./davbackup-data``; on first use it creates it with a generated passphrase, kept
*outside* the repository in ``~/.config/davbackup/davbackup-data.passphrase``
(mode 0600), and a first user ``admin`` whose random password is printed once.

Basic auth sends passwords in the clear, so a host that is not a loopback address
needs TLS (``--tls-cert/--tls-key`` or ``--tls-self-signed``) unless
``--allow-insecure-http`` is given.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from davbackup.catalog_health import check_file, check_rows
from davbackup.cli.common import PASSPHRASE_ENV, add_repo_arguments, read_passphrase
from davbackup.cli.malloc_tuning import tune_malloc
from davbackup.errors import UsageError
from davbackup.location import recorded_catalog_url
from davbackup.repository import Repository

_log = logging.getLogger(__name__)

DEFAULT_REPO = Path("davbackup-data")
FIRST_USER = "admin"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve a repository over WebDAV",
        description="Serve a repository over WebDAV. Without --repo: ./davbackup-data, "
        "created on first use.",
    )
    add_repo_arguments(parser, required=False)
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key (with --tls-cert)")
    parser.add_argument(
        "--tls-self-signed",
        action="store_true",
        default=None,
        help="use a self-signed certificate, created under the repository on first use",
    )
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=None,
        help="allow plain HTTP on a non-loopback address (passwords travel in the clear)",
    )
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.add_argument(
        "--packs-cache-mib", type=int, metavar="N",
        help="with packs in an object store: keep up to N MiB of packs in DIR/cache (default 0: off)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    tune_malloc()  # again, for callers other than `davbackup serve` (cheap, idempotent)
    # provider/ pulls in WsgiDAV: import it only when serving.
    from provider import build_app, serve_forever
    from provider.config_file import load_options, settings_from_options
    from provider.tls import ensure_self_signed, fingerprint

    options = _merged_options(args, load_options(args.config) if args.config else {})
    settings = settings_from_options(options)
    self_signed = bool(options.get("tls.self_signed"))
    if self_signed and settings.tls_cert is not None:
        raise UsageError("use either --tls-self-signed or --tls-cert/--tls-key, not both")
    _check_transport(settings.host, settings.tls_cert is not None or self_signed,
                     bool(options.get("allow_insecure_http")))

    repo_dir = options.get("repo")
    catalog_url = options.get("catalog")
    if repo_dir is None and catalog_url is None and options.get("packs.url"):
        raise UsageError("--packs (packs.url) needs --repo (the directory that holds the catalog) or --catalog")
    if repo_dir is None and catalog_url is None:
        if (DEFAULT_REPO / "config.json").exists():
            check_file(DEFAULT_REPO / "catalog.sqlite")
        repo = _open_default_repository(options.get("passphrase_file"))
        repo_dir = DEFAULT_REPO
    else:
        cache_mib = options.get("packs.cache_mib") or 0
        if cache_mib < 0:
            raise UsageError("the pack cache size (packs.cache_mib, --packs-cache-mib) must be 0 or more")
        # A damaged catalog is refused before anything opens it (DESIGN.md §20.6).
        if catalog_url is None and repo_dir is not None and recorded_catalog_url(Path(repo_dir)) is None:
            check_file(Path(repo_dir) / "catalog.sqlite")
        repo = Repository.open(
            repo_dir,
            _passphrase(options.get("passphrase_file")),
            packs_url=options.get("packs.url"),
            packs_cache_bytes=cache_mib * 1024 * 1024,
            catalog_url=catalog_url,
        )
        if repo_dir is None:
            repo_dir = repo.root  # this node's local state; the repository is catalog + packs
    try:
        if repo.catalog_url is None:
            check_rows(repo.catalog.path, repo.catalog.reader(), repo.tree)
        if self_signed:
            cert, key, created = ensure_self_signed(repo_dir, settings.host)
            settings = replace(settings, tls_cert=cert, tls_key=key)
            verb = "created" if created else "using"
            print(f"davbackup serve: {verb} self-signed certificate {cert}", file=sys.stderr)
            print(f"  SHA-256 fingerprint {fingerprint(cert)}", file=sys.stderr)
        app = build_app(repo, settings)

        def announce(url: str) -> None:
            where = repo_dir if catalog_url is None else f"{repo.location.url or repo_dir} (catalog in PostgreSQL)"
            print(f"davbackup serve: serving {where} on {url}", flush=True)

        serve_forever(app, settings, on_ready=announce)
    finally:
        repo.close()
    return 0


def _merged_options(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """File options overridden by whatever was given on the command line."""
    merged = dict(options)
    from_cli = {
        "repo": args.repo,
        "passphrase_file": args.passphrase_file,
        "catalog": args.catalog,
        "packs.url": args.packs,
        "packs.cache_mib": args.packs_cache_mib,
        "host": args.host,
        "port": args.port,
        "tls.cert": args.tls_cert,
        "tls.key": args.tls_key,
        "tls.self_signed": args.tls_self_signed,
        "allow_insecure_http": args.allow_insecure_http,
    }
    merged.update({key: value for key, value in from_cli.items() if value is not None})
    return merged


def _check_transport(host: str, tls: bool, allow_insecure: bool) -> None:
    if tls or _is_loopback(host):
        return
    if not allow_insecure:
        raise UsageError(
            f"refusing to serve plain HTTP on {host}: Basic auth would send passwords in "
            "the clear. Use --tls-cert/--tls-key or --tls-self-signed, or "
            "--allow-insecure-http behind a TLS-terminating proxy."
        )
    message = f"serving plain HTTP on non-loopback address {host}: passwords travel in the clear"
    _log.warning(message)
    print(f"davbackup serve: WARNING: {message}", file=sys.stderr)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _passphrase(passphrase_file: Path | None) -> str:
    return read_passphrase(argparse.Namespace(passphrase_file=passphrase_file))


def default_passphrase_path() -> Path:
    """``~/.config/davbackup/davbackup-data.passphrase`` (honouring $XDG_CONFIG_HOME)."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "davbackup" / f"{DEFAULT_REPO.name}.passphrase"


def _open_default_repository(passphrase_file: Path | None) -> Repository:
    """Open ./davbackup-data, creating it (passphrase, first user) on first use."""
    exists = (DEFAULT_REPO / "config.json").exists()
    if exists:
        if passphrase_file is None and not os.environ.get(PASSPHRASE_ENV):
            stored = default_passphrase_path()
            if stored.exists():
                passphrase_file = stored
        return Repository.open(DEFAULT_REPO, _passphrase(passphrase_file))

    if passphrase_file is not None or os.environ.get(PASSPHRASE_ENV):
        passphrase, where = _passphrase(passphrase_file), None
    else:
        passphrase, where = _stored_or_new_passphrase(default_passphrase_path())
    repo = Repository.init(DEFAULT_REPO, passphrase)
    try:
        password = secrets.token_urlsafe(18)
        repo.users.add(FIRST_USER, password, "rw")
    except BaseException:
        repo.close()
        raise
    lines = [f"Created repository {DEFAULT_REPO.resolve()}."]
    if where is not None:
        lines += [
            f"Its passphrase is in {where} (mode 0600).",
            "Back that file up: without the passphrase the data cannot be decrypted.",
        ]
    lines += [
        f"First user: {FIRST_USER}  password: {password}",
        "(shown only now; change it with "
        f"`davbackup user passwd {FIRST_USER} --repo {DEFAULT_REPO}`)",
    ]
    print("\n".join(lines), flush=True)
    return repo


def _stored_or_new_passphrase(path: Path) -> tuple[str, Path]:
    """The passphrase kept at ``path``, generating it (0600) if there is none yet."""
    if path.exists():
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
        if not text:
            raise UsageError(f"passphrase file {path} is empty")
        return text, path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    passphrase = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(passphrase + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return passphrase, path
