"""Everything the WebDAV server can be configured with, in one frozen record.

``davbackup serve`` builds a :class:`ServerSettings` from defaults, the YAML file
given with ``--config`` and the command line (in that order of precedence, lowest
first); ``config/davbackup.example.yaml`` documents every field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from davbackup import upload_settings
from provider.auth import ThrottleSettings
from provider.http_limits import HttpLimits

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens, and how it treats requests."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: PEM certificate and key; both or neither
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: cheroot worker threads (one per concurrent request)
    threads: int = 32
    #: seconds one socket read or write may block; a stalled upload is dropped after this
    socket_timeout: float = 300.0
    #: seconds to wait for running requests on shutdown
    shutdown_timeout: float = 10.0
    #: listen backlog
    request_queue_size: int = 64
    #: what a client may send before its request reaches the application (414, 431, 408, 503)
    max_request_line: int = 8192
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    slow_header_workers: int = 0
    slow_header_grace: float = 1.0
    max_connections: int = 1024
    max_connections_per_address: int = 256
    #: bytes read from a PUT body / written for a GET per step
    block_size: int = 1 * MiB
    #: answer PROPFIND with Depth: infinity instead of 403 propfind-finite-depth
    allow_propfind_infinity: bool = False
    #: write common PROPFIND answers directly from the catalog (provider/propfind_direct.py);
    #: off: WsgiDAV's generic property path (same answers, slower)
    propfind_direct: bool = True
    #: store plain whole-file PUTs without WsgiDAV's resource machinery (provider/put_direct.py);
    #: off: WsgiDAV's PUT (same answers, slower)
    put_direct: bool = True
    #: answer plain GETs of files (whole or one range) without WsgiDAV's resources
    #: (provider/get_direct.py); off: WsgiDAV's GET (same answers, slower)
    get_direct: bool = True
    #: largest XML request body of a PROPFIND accepted
    max_xml_body: int = 1 * MiB
    #: largest PROPPATCH body (dead properties, Windows' Win32 times) accepted
    max_proppatch_body: int = 256 * 1024
    #: largest LOCK body accepted
    max_lock_body: int = 16 * 1024
    #: locks on one resource (shared locks stack), locks held by one user
    max_locks_per_resource: int = 32
    max_locks_per_user: int = 1000
    #: bytes of owner XML a lock may carry (stored, reloaded at every start)
    max_lock_owner: int = 4096
    #: HTML listing for GET on a collection (HEAD on a collection answers 200 either way)
    dir_browser: bool = True
    #: take the modification time from an X-OC-Mtime header on PUT/MKCOL (rclone, ownCloud)
    honor_mtime_header: bool = True
    #: .DS_Store, ._*, Thumbs.db, desktop.ini: "store" (like any file), "refuse" (403), "skip"
    os_metadata: str = "store"
    #: seconds an unfinished resumable upload may stay idle before it expires
    upload_session_ttl: float = upload_settings.DEFAULT_TTL
    #: bytes of a long upload request between two durable checkpoints of its session
    upload_checkpoint_bytes: int = upload_settings.CHECKPOINT_BYTES
    #: open (unexpired) upload sessions one user may hold; one more is a 429
    upload_max_sessions_per_user: int = upload_settings.MAX_SESSIONS_PER_USER
    #: the largest length an upload may declare (413 above); 16 TiB
    upload_max_length: int = upload_settings.MAX_LENGTH
    #: disk space kept back so that DELETE and gc work on a full disk (davbackup/reserve.py)
    reserve_bytes: int = 64 * MiB
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)

    @property
    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            max_request_line=self.max_request_line,
            max_header_bytes=self.max_header_bytes,
            max_headers=self.max_headers,
            header_timeout=self.header_timeout,
            slow_header_workers=self.slow_header_workers,
            slow_header_grace=self.slow_header_grace,
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
        )

    @property
    def uses_tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def url(self) -> str:
        scheme = "https" if self.uses_tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"
