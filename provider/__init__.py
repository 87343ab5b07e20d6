"""The WsgiDAV adapter: serves a davbackup repository over WebDAV.

A thin layer over the public API of :mod:`davbackup`: it is handed a repository as a
:class:`davbackup.service.DavService` (namespaces, users, upload sessions, locks, the
space guard; mypy holds it to that interface), maps requests onto it and never touches
packs or SQL. Only ``davbackup serve`` imports this package; the core never does.

Modules, from the request inwards:

``health``          the load balancers' health check (no login, reveals nothing)
``request_log``     access log line per request; bad paths; unread bodies close
``auth``            Basic auth, login throttling, read-only users
``dir_browser``     HTML listings (read-only users are told so)
``request_server``  WsgiDAV request handling adjusted (201 on COPY/MOVE, finite-depth
                    PROPFIND, XML guard, strict ranges, lock tokens, error mapping)
``ranges``          Range header decisions
``resumable*``      range PUT, PATCH and IETF resumable uploads
``dav_provider``    the provider: each user's namespace at ``/``
``resources``       files, collections, the PUT placeholder
``properties``      dead properties over the catalog
``locks``           locks over the catalog (they survive restarts)
``paths``           per-user reference URLs
``errors``          davbackup errors -> DAVError
``app``             WsgiDAV configuration and the WSGI app
``server``          cheroot, TLS, signals
``http_limits``     request line/header limits, header deadline, connection limits
``throttle``        login throttling
``request_checks``  X-OC-Mtime and Destination checks before anything is stored
``settings``        the configuration record; ``config_file`` reads it from YAML
``tls``             the self-signed certificate of ``--tls-self-signed``
"""

from provider.app import build_app, build_config
from provider.server import make_server, serve_forever
from provider.settings import ServerSettings

__all__ = ["ServerSettings", "build_app", "build_config", "make_server", "serve_forever"]
