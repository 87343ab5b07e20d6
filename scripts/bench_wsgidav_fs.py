#!/usr/bin/env python3
"""The benchmark baseline: plain WsgiDAV with its FilesystemProvider in cheroot.

Started by ``scripts/bench_server.py`` in its own process. It mirrors davbackup's
server settings (thread count, socket/shutdown timeouts, listen backlog, block size)
by reading the defaults of :class:`provider.settings.ServerSettings`, so the two
servers differ only in what sits behind WsgiDAV. Prints ``serving on URL`` once the
socket is bound, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any, Callable

from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp

# Fallbacks if provider/ cannot be imported (it is being edited concurrently).
_FALLBACK = {
    "threads": 16,
    "socket_timeout": 300.0,
    "shutdown_timeout": 10.0,
    "request_queue_size": 64,
    "block_size": 1024 * 1024,
}


def davbackup_server_settings() -> dict[str, Any]:
    """davbackup's cheroot settings (defaults of ``ServerSettings``)."""
    try:
        from provider.settings import ServerSettings

        s = ServerSettings()
        return {
            "threads": s.threads,
            "socket_timeout": s.socket_timeout,
            "shutdown_timeout": s.shutdown_timeout,
            "request_queue_size": s.request_queue_size,
            "block_size": s.block_size,
        }
    except Exception as exc:  # noqa: BLE001 - report and use the known values
        print(f"bench_wsgidav_fs: using fallback settings ({exc})", file=sys.stderr)
        return dict(_FALLBACK)


def build_app(root: str, user: str, password: str, block_size: int) -> WsgiDAVApp:
    config = {
        "provider_mapping": {"/": root},
        "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
        "http_authenticator": {
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
        },
        "block_size": block_size,
        "verbose": 1,
        "logging": {"enable": False},
    }
    return WsgiDAVApp(config)


def serve(app: Any, host: str, port: int, settings: dict[str, Any], server_name: str,
          setup: Callable[[wsgi.Server], Callable[[], None] | None] | None = None, note: str = "") -> None:
    """Serve ``app`` in cheroot with ``settings`` until SIGTERM/SIGINT; prints ``serving
    on URL`` once bound. ``setup`` may change the server before it binds and return
    what to call after it stopped (also used by ``scripts/bench_floor_app.py``)."""
    server = wsgi.Server(
        (host, port),
        app,
        numthreads=settings["threads"],
        server_name=server_name,
        request_queue_size=settings["request_queue_size"],
        timeout=int(settings["socket_timeout"]),
        shutdown_timeout=int(settings["shutdown_timeout"]),
    )
    cleanup = setup(server) if setup is not None else None
    server.prepare()
    host, port = server.bind_addr[:2]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = threading.Thread(target=server.serve, name="cheroot", daemon=True)
    worker.start()
    print(f"serving on http://{host}:{port}/ settings={settings}{note}", flush=True)
    while not stop.wait(0.5):
        if not worker.is_alive():
            break
    server.stop()
    worker.join(timeout=settings["shutdown_timeout"] + 5)
    if cleanup is not None:
        cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", default="u")
    parser.add_argument("--password", default="p")
    args = parser.parse_args()

    settings = davbackup_server_settings()
    logging.getLogger("wsgidav").setLevel(logging.WARNING)
    app = build_app(args.root, args.user, args.password, settings["block_size"])
    serve(app, args.host, args.port, settings, "wsgidav-fs-baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
