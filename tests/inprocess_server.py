"""A davbackup server in the test's own process: real cheroot on a real socket.

Tests that compare two configurations over one repository (the direct PROPFIND and
PUT paths against WsgiDAV's generic ones) start two of these on the same
``Repository``, so both see the same catalog at every moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
        workdir.mkdir(parents=True, exist_ok=True)
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


class PathRecorder:
    """WSGI wrapper remembering, per request of ``method``, which path answered it: the
    value a direct path leaves in ``environ[key]`` (``missing`` when none did)."""

    def __init__(self, app: Any, method: str, key: str, missing: str | None = None) -> None:
        self.app, self.method, self.key, self.missing = app, method, key, missing
        self.seen: list[str | None] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = list(self.app(environ, start_response))  # the answer is made while iterating
        if environ.get("REQUEST_METHOD") == self.method:
            self.seen.append(environ.get(self.key, self.missing))
        return body


@dataclass
class Twins:
    """Two servers over one repository: a direct path off (the reference) and on."""

    generic_url: str
    direct_url: str
    recorder: PathRecorder  # of the direct server
    repo: Repository


@contextmanager
def twin_servers(workdir: Path, setting: str, method: str, key: str,
                 populate: Callable[[str], None] | None = None) -> Iterator[Twins]:
    """The server with ``setting`` (e.g. ``put_direct``) off, ``populate(its url)``, then
    the server with it on over the same repository, its answers recorded by path."""
    recorders: list[PathRecorder] = []

    def wrap(app: Any) -> Any:
        recorders.append(PathRecorder(app, method, key))
        return recorders[-1]

    with inprocess_app_server(workdir, wrap=wrap, **{setting: False}) as (generic_url, repo):
        if populate is not None:
            populate(generic_url)
        with inprocess_app_server(workdir, repo=repo, wrap=wrap, **{setting: True}) as (direct_url, _):
            yield Twins(generic_url, direct_url, recorders[1], repo)
