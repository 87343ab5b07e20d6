"""The YAML configuration file of ``davbackup serve --config FILE``.

The file is a mapping with the sections shown in ``config/davbackup.example.yaml``.
:func:`load_options` checks it against :data:`SCHEMA` (unknown keys and wrong types
are errors, so a typo never silently falls back to a default) and flattens it to
dotted keys; relative paths are taken relative to the file's directory.
:func:`settings_from_options` turns flat options (from the file, overridden by the
command line) into :class:`ServerSettings`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from davbackup.errors import UsageError
from provider.auth import ThrottleSettings
from provider.client_compat import OS_METADATA_MODES
from provider.settings import ServerSettings

#: dotted key -> value type. ``Path`` values are resolved against the file's directory.
SCHEMA: dict[str, type] = {
    "repo": Path,
    "passphrase_file": Path,
    "catalog": str,
    "packs.url": str,
    "packs.cache_mib": int,
    "host": str,
    "port": int,
    "allow_insecure_http": bool,
    "tls.cert": Path,
    "tls.key": Path,
    "tls.self_signed": bool,
    "server.threads": int,
    "server.socket_timeout": float,
    "server.shutdown_timeout": float,
    "server.request_queue_size": int,
    "server.block_size": int,
    "server.max_request_line": int,
    "server.max_header_bytes": int,
    "server.max_headers": int,
    "server.header_timeout": float,
    "server.slow_header_workers": int,
    "server.slow_header_grace": float,
    "server.max_connections": int,
    "server.max_connections_per_address": int,
    "webdav.allow_propfind_infinity": bool,
    "webdav.propfind_direct": bool,
    "webdav.put_direct": bool,
    "webdav.get_direct": bool,
    "webdav.max_xml_body": int,
    "webdav.max_proppatch_body": int,
    "webdav.max_lock_body": int,
    "webdav.max_locks_per_resource": int,
    "webdav.max_locks_per_user": int,
    "webdav.max_lock_owner": int,
    "webdav.dir_browser": bool,
    "webdav.honor_mtime_header": bool,
    "webdav.os_metadata": str,
    "uploads.session_ttl": float,
    "uploads.checkpoint_bytes": int,
    "uploads.max_sessions_per_user": int,
    "uploads.max_length": int,
    "storage.reserve_mib": int,
    "auth.max_failures": int,
    "auth.window_seconds": float,
    "auth.base_delay_seconds": float,
    "auth.max_delay_seconds": float,
    "auth.address_factor": int,
    "auth.account_factor": int,
    "auth.trusted_seconds": float,
    "auth.trusted_proxies": str,
    "auth.proxy_header": str,
}

_SECTIONS = {key.split(".", 1)[0] for key in SCHEMA if "." in key}


def load_options(path: Path) -> dict[str, Any]:
    """The file's options as ``{dotted key: value}`` (only keys that are set)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path}: expected a mapping at the top level")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise UsageError(f"config file {path}: {key!r} must be a mapping")
            for sub, sub_value in value.items():
                flat[f"{key}.{sub}"] = sub_value
        else:
            flat[str(key)] = value
    base = Path(path).resolve().parent
    options: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in SCHEMA:
            raise UsageError(f"config file {path}: unknown option {key!r}")
        if value is None:
            continue
        options[key] = _coerce(path, key, value, SCHEMA[key], base)
    return options


def _coerce(path: Path, key: str, value: Any, kind: type, base: Path) -> Any:
    where = f"config file {path}: {key}"
    if kind is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where} must be an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where} must be a number")
        return float(value)
    if kind is Path:
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where} must be a path")
        resolved = Path(value).expanduser()
        return resolved if resolved.is_absolute() else base / resolved
    if not isinstance(value, str):
        raise UsageError(f"{where} must be a string")
    return value


def settings_from_options(options: dict[str, Any]) -> ServerSettings:
    """Server settings from flat options; absent keys keep their defaults."""
    throttle_fields = {f.name for f in fields(ThrottleSettings)}
    throttle = ThrottleSettings(
        **{k.split(".", 1)[1]: v for k, v in options.items()
           if k.startswith("auth.") and k.split(".", 1)[1] in throttle_fields}
    )
    direct = {
        "host": "host",
        "port": "port",
        "tls.cert": "tls_cert",
        "tls.key": "tls_key",
        "server.threads": "threads",
        "server.socket_timeout": "socket_timeout",
        "server.shutdown_timeout": "shutdown_timeout",
        "server.request_queue_size": "request_queue_size",
        "server.block_size": "block_size",
        "server.max_request_line": "max_request_line",
        "server.max_header_bytes": "max_header_bytes",
        "server.max_headers": "max_headers",
        "server.header_timeout": "header_timeout",
        "server.slow_header_workers": "slow_header_workers",
        "server.slow_header_grace": "slow_header_grace",
        "server.max_connections": "max_connections",
        "server.max_connections_per_address": "max_connections_per_address",
        "webdav.allow_propfind_infinity": "allow_propfind_infinity",
        "webdav.propfind_direct": "propfind_direct",
        "webdav.put_direct": "put_direct",
        "webdav.get_direct": "get_direct",
        "webdav.max_xml_body": "max_xml_body",
        "webdav.max_proppatch_body": "max_proppatch_body",
        "webdav.max_lock_body": "max_lock_body",
        "webdav.max_locks_per_resource": "max_locks_per_resource",
        "webdav.max_locks_per_user": "max_locks_per_user",
        "webdav.max_lock_owner": "max_lock_owner",
        "webdav.dir_browser": "dir_browser",
        "webdav.honor_mtime_header": "honor_mtime_header",
        "webdav.os_metadata": "os_metadata",
        "uploads.session_ttl": "upload_session_ttl",
        "uploads.checkpoint_bytes": "upload_checkpoint_bytes",
        "uploads.max_sessions_per_user": "upload_max_sessions_per_user",
        "uploads.max_length": "upload_max_length",
    }
    values = {name: options[key] for key, name in direct.items() if options.get(key) is not None}
    if options.get("storage.reserve_mib") is not None:
        if options["storage.reserve_mib"] < 0:
            raise UsageError("storage.reserve_mib must not be negative")
        values["reserve_bytes"] = options["storage.reserve_mib"] * 1024 * 1024
    settings = ServerSettings(throttle=throttle, **values)
    _validate(settings)
    return settings


def _validate(settings: ServerSettings) -> None:
    if settings.upload_session_ttl <= 0 or settings.upload_checkpoint_bytes < 1024 * 1024:
        raise UsageError("uploads.session_ttl must be positive and uploads.checkpoint_bytes at least 1 MiB")
    if settings.upload_max_sessions_per_user < 1 or settings.upload_max_length < 1:
        raise UsageError("uploads.max_sessions_per_user and uploads.max_length must be at least 1")
    if not 0 <= settings.port <= 65535:
        raise UsageError(f"port {settings.port} is out of range")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise UsageError("a TLS certificate and its key must be given together")
    for name in ("threads", "request_queue_size", "block_size", "max_xml_body",
                 "max_proppatch_body", "max_lock_body", "max_locks_per_resource",
                 "max_locks_per_user", "max_lock_owner", "max_request_line",
                 "max_header_bytes", "max_headers", "max_connections",
                 "max_connections_per_address"):
        if getattr(settings, name) < 1:
            raise UsageError(f"{name} must be at least 1")
    if settings.slow_header_workers < 0:
        raise UsageError("slow_header_workers must not be negative (0: half the threads)")
    for name in ("socket_timeout", "shutdown_timeout", "header_timeout", "slow_header_grace"):
        if getattr(settings, name) <= 0:
            raise UsageError(f"{name} must be positive")
    if settings.os_metadata not in OS_METADATA_MODES:
        raise UsageError(f"webdav.os_metadata must be one of: {', '.join(OS_METADATA_MODES)}")
    throttle = settings.throttle
    if min(throttle.max_failures, throttle.address_factor, throttle.account_factor) < 1:
        raise UsageError("auth.max_failures, auth.address_factor and auth.account_factor must be at least 1")
    for proxy in filter(None, (p.strip() for p in throttle.trusted_proxies.split(","))):
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise UsageError(f"auth.trusted_proxies: {proxy!r} is not an IP address") from None
    if not throttle.proxy_header.strip() or not all(
        ch.isalnum() or ch == "-" for ch in throttle.proxy_header.strip()
    ):
        raise UsageError(f"auth.proxy_header {throttle.proxy_header!r} is not a header name")
