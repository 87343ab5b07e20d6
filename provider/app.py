"""Assemble the WSGI application: WsgiDAV configured for one davbackup repository.

The middleware stack, outermost first::

    HealthCheck                 GET /.well-known/davbackup-health, no login (provider.health)
    OptionsPath                 percent-decodes OPTIONS paths (provider.client_compat)
    RequestLog                  one access log line per request (provider.request_log)
    WsgiDAVApp                  routing, path normalization
      LoggingErrorPrinter       DAVError -> HTTP error response; 500s logged with traceback
      RepositoryAuthenticator   Basic auth, throttling, read-only users (provider.auth)
      DirectPut                 plain whole-file PUTs answered in one place (provider.put_direct)
      DirectGet                 plain GETs of files, whole or one range (provider.get_direct)
      DavBackupDirBrowser       HTML listing for GET on collections, /:dir_browser assets
      DavBackupRequestResolver  -> DavBackupRequestServer (provider.request_server)

The provider, the lock storage and the property manager all sit on the repository
passed in; nothing here touches packs or the catalog directly.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from wsgidav.wsgidav_app import WsgiDAVApp

from davbackup.errors import StorageUnavailable
from davbackup.upload_settings import UploadSettings
from provider import internals
from provider.auth import RepositoryAuthenticator, RepositoryDomainController
from provider.client_compat import OptionsPath
from provider.dav_provider import DavBackupProvider
from provider.dir_browser import TEMPLATES, DavBackupDirBrowser
from provider.errors import LoggingErrorPrinter
from provider.get_direct import DirectGet
from provider.health import HealthCheck
from provider.locks import LockLimits, RepositoryLockStorage
from provider.properties import CatalogPropertyManager
from provider.put_direct import DirectPut
from provider.request_log import RequestLog
from provider.request_server import DavBackupRequestResolver
from provider.resumable.body import preempt
from provider.settings import ServerSettings

if TYPE_CHECKING:
    from davbackup.service import DavService

WSGIApp = Any


def build_config(repo: DavService, settings: ServerSettings) -> dict[str, Any]:
    """The WsgiDAV configuration dict for ``repo``."""
    return {
        "provider_mapping": {"/": DavBackupProvider(repo)},
        "middleware_stack": [
            LoggingErrorPrinter,
            RepositoryAuthenticator,
            DirectPut,
            DirectGet,
            DavBackupDirBrowser,
            DavBackupRequestResolver,
        ],
        "http_authenticator": {
            "domain_controller": RepositoryDomainController,
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
            "trusted_auth_header": None,
        },
        "lock_storage": RepositoryLockStorage(repo, LockLimits(
            per_resource=settings.max_locks_per_resource,
            per_user=settings.max_locks_per_user,
            owner_bytes=settings.max_lock_owner,
        )),
        "property_manager": CatalogPropertyManager(repo),
        "block_size": settings.block_size,
        "honor_mtime_header": settings.honor_mtime_header,
        # rclone (ownCloud conventions) sets the modification time by PROPPATCH
        "mutable_live_props": ["{DAV:}getlastmodified"],
        "add_header_MS_Author_Via": True,
        "suppress_version_info": True,
        "dir_browser": {
            "enable": settings.dir_browser,
            "davmount": True,
            "davmount_links": True,
            "directory_slash": True,
            "htdocs_path": str(TEMPLATES),  # davbackup's own page (provider/templates)
            "ignore": [".DS_Store", "._*", "Thumbs.db", "desktop.ini"],
        },
        # WsgiDAV's own per-request lines are replaced by provider.request_log.
        "verbose": 2,
        "logging": {"enable": False},
        "davbackup": {
            "repository": repo,
            "throttle": settings.throttle,
            "allow_propfind_infinity": settings.allow_propfind_infinity,
            "propfind_direct": settings.propfind_direct,
            "put_direct": settings.put_direct,
            "get_direct": settings.get_direct,
            "max_xml_body": settings.max_xml_body,
            "os_metadata": settings.os_metadata,
            "max_xml_bodies": {
                "PROPFIND": settings.max_xml_body,
                "PROPPATCH": settings.max_proppatch_body,
                "LOCK": settings.max_lock_body,
            },
        },
    }


def build_app(repo: DavService, settings: ServerSettings) -> WSGIApp:
    """The complete WSGI application serving ``repo``."""
    # recorded in the catalog, so that `davbackup gc` expires sessions by the same lifetime
    repo.uploads.configure(UploadSettings(
        session_ttl=settings.upload_session_ttl,
        checkpoint_bytes=settings.upload_checkpoint_bytes,
        max_sessions_per_user=settings.upload_max_sessions_per_user,
        max_length=settings.upload_max_length,
    ))
    internals.verify()  # fail at start, not mid-request, if WsgiDAV or cheroot changed
    internals.install_destination_parser()  # names with ';' or '?' as COPY/MOVE targets
    repo.reserve.size = settings.reserve_bytes
    if not repo.reserve.ensure():
        logging.getLogger(__name__).warning(
            "not enough free space for the %d MiB space reserve: writes are refused (507) until "
            "there is room for it twice over", settings.reserve_bytes >> 20)
    logging.getLogger("wsgidav").setLevel(
        logging.DEBUG if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.WARNING
    )
    config = build_config(repo, settings)
    app: WSGIApp = WsgiDAVApp(config)
    if repo.catalog.shared:  # several nodes: each request first sees other nodes' locks
        app = LockSync(app, config["lock_storage"])
        # and an IETF upload resumed on another node stops its old request here
        repo.uploads.serve_stop_requests(lambda sid: preempt(sid, wait=0))
    return HealthCheck(OptionsPath(RequestLog(app)), repo)


class LockSync:
    """With a catalog shared by several nodes: bring the lock copy up to date before
    each request (provider.locks.RepositoryLockStorage.sync)."""

    def __init__(self, app: WSGIApp, storage: RepositoryLockStorage) -> None:
        self.app, self.storage = app, storage

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        try:
            self.storage.sync()
        except StorageUnavailable as exc:  # the catalog database does not answer
            body = b"503 Service Unavailable: the catalog database does not answer\n"
            start_response("503 Service Unavailable", [
                ("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                ("Retry-After", str(exc.retry_after)),
            ])
            return [body]
        return self.app(environ, start_response)
