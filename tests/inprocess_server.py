"""A davbackup server in the test's own process: real cheroot on a real socket.

Tests that compare two configurations over one repository (the direct PROPFIND and
PUT paths against WsgiDAV's generic ones) start two of these on the same
``Repository``, so both see the same catalog at every moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from davbackup.repository import Repository
from provider import ServerSettings, build_app, make_server
from tests.server_fixtures import DEFAULT_USERS, PASSPHRASE, _env, create_repository


@contextmanager
def inprocess_app_server(workdir: Path, *, repo: Repository | None = None,
                         wrap: Callable[[Any], Any] | None = None,
                         **settings: Any) -> Iterator[tuple[str, Repository]]:
    """A server in this process on ``repo`` or a new one (users: ``DEFAULT_USERS``);
    ``settings`` are :class:`provider.ServerSettings` fields."""
    own = repo is None
    if repo is None:
        create_repository(workdir / "repo", _env(workdir), dict(DEFAULT_USERS))
        repo = Repository.open(workdir / "repo", PASSPHRASE)
    config = ServerSettings(host="127.0.0.1", port=0, threads=8, **settings)
    app = build_app(repo, config)
    server = make_server(wrap(app) if wrap else app, config)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.bind_addr[1]}", repo
    finally:
        server.stop()
        thread.join(timeout=10)
        if own:
            repo.close()
