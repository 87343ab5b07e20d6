"""Run the WSGI application in cheroot until SIGTERM or SIGINT.

One process, a pool of worker threads: WsgiDAV's lock manager serializes only
within a process, and the repository has one writer. The socket timeout applies to
each read or write, not to a whole request, so long uploads are fine as long as
bytes keep arriving; the request line and headers have their own limits and
deadline (:mod:`provider.http_limits`). On a signal the server stops accepting, lets running requests
finish for up to ``shutdown_timeout`` seconds, and the caller closes the repository.
A second signal ends the process at once (the store is crash-safe).
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
from types import FrameType
from typing import Any, Callable

from cheroot import wsgi

from provider.http_limits import DeferredHandshakeAdapter, guard_of
from provider.http_limits import install as install_limits
from provider.request_log import lighten_logging
from provider.settings import ServerSettings

_log = logging.getLogger(__name__)


def make_server(app: Any, settings: ServerSettings) -> wsgi.Server:
    """A configured, not yet started cheroot server."""
    server = wsgi.Server(
        (settings.host, settings.port),
        app,
        numthreads=settings.threads,
        server_name="davbackup",
        request_queue_size=settings.request_queue_size,
        timeout=int(settings.socket_timeout),
        shutdown_timeout=int(settings.shutdown_timeout),
    )
    install_limits(server, settings.http_limits, settings.threads)
    if settings.tls_cert is not None:
        if settings.tls_key is None:
            raise ValueError("a TLS certificate needs its key")
        adapter = DeferredHandshakeAdapter(str(settings.tls_cert), str(settings.tls_key))
        adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
        server.ssl_adapter = adapter
    return server


def serve_forever(
    app: Any,
    settings: ServerSettings,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop cleanly. Must run in the main thread."""
    lighten_logging()
    server = make_server(app, settings)
    server.prepare()  # binds, so a busy port fails here, in the caller
    host, port = server.bind_addr[:2]
    url = ServerSettings(host=host, port=port, tls_cert=settings.tls_cert).url
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():  # a second signal: do not wait for running requests
            _log.warning("received %s again, exiting at once", signal.Signals(signum).name)
            os._exit(128 + signum)
        _log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {
        sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    worker = threading.Thread(target=server.serve, name="cheroot", daemon=True)
    worker.start()
    _log.info("serving on %s", url)
    if on_ready is not None:
        on_ready(url)
    try:
        while not stop.wait(0.5):
            if not worker.is_alive():
                _log.error("the HTTP server thread ended unexpectedly")
                break
    finally:
        server.stop()
        worker.join(timeout=settings.shutdown_timeout + 5)
        guard_of(server).stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _log.info("stopped")
