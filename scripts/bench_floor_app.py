#!/usr/bin/env python3
"""The floor of the required stack: cheroot with a WSGI app that does the minimum.

Started by ``scripts/bench_floor.py`` in its own process, with the cheroot version and
settings of ``davbackup serve`` (thread count, socket/shutdown timeouts, listen
backlog, block size: read from :class:`provider.settings.ServerSettings` through
``scripts/bench_wsgidav_fs.py``). The app knows five methods and nothing of WebDAV:

* ``PUT``: the body, read in ``block_size`` steps, goes to a file under ``--root``;
  with ``--fsync`` the file is fsynced before the ``201`` (the answer is durable as
  davbackup's are; the directory entry is not fsynced);
* ``GET``: with ``Range: bytes=A-B`` one ``pread`` of those bytes, ``206``; without,
  the whole file in ``block_size`` blocks;
* ``MKCOL`` (``mkdir``), ``OPTIONS``; anything else ``405``.

``--auth`` adds HTTP Basic authentication: the ``Authorization`` header is looked up
in a cache of accepted headers (a miss decodes it and compares user and password),
the least any authenticated server does per request. ``--limits`` installs
davbackup's own cheroot additions (``provider.http_limits.install``: header limits
and deadlines, per-address connection counts, one ``sendmsg`` per small answer), as
``davbackup serve`` does. Prints ``serving on URL`` once bound, serves until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from cheroot import wsgi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_wsgidav_fs import davbackup_server_settings, serve  # noqa: E402

StartResponse = Callable[..., Any]


class FloorApp:
    """PUT to a file (optionally fsynced), ranged GET by ``pread``; optional Basic auth."""

    def __init__(self, root: Path, *, fsync: bool, block_size: int, credentials: tuple[str, str] | None) -> None:
        self.root = root.resolve()
        self.fsync = fsync
        self.block_size = block_size
        self.credentials = credentials
        self._accepted: dict[str, str] = {}  # Authorization header -> user

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.credentials is not None and not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            self._drain(environ)
            return _answer(start_response, "401 Unauthorized", [("WWW-Authenticate", 'Basic realm="floor"')])
        method = environ["REQUEST_METHOD"]
        path = self._local(environ.get("PATH_INFO", "/"))
        if path is None:
            self._drain(environ)
            return _answer(start_response, "403 Forbidden")
        if method == "PUT":
            return self._put(environ, start_response, path)
        if method == "GET":
            return self._get(environ, start_response, path)
        self._drain(environ)
        if method == "MKCOL":
            try:
                path.mkdir()
            except FileExistsError:
                return _answer(start_response, "405 Method Not Allowed")
            return _answer(start_response, "201 Created")
        if method == "OPTIONS":
            return _answer(start_response, "200 OK", [("DAV", "1"), ("Allow", "OPTIONS, GET, PUT, MKCOL")])
        return _answer(start_response, "405 Method Not Allowed")

    def _authorized(self, header: str) -> bool:
        if header in self._accepted:
            return True
        assert self.credentials is not None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        want_user, want_password = self.credentials
        if hmac.compare_digest(user, want_user) & hmac.compare_digest(password, want_password):
            if len(self._accepted) < 1024:
                self._accepted[header] = user
            return True
        return False

    def _local(self, path_info: str) -> Path | None:
        parts = [p for p in path_info.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return None
        return self.root.joinpath(*parts)

    def _drain(self, environ: dict[str, Any]) -> None:
        left = int(environ.get("CONTENT_LENGTH") or 0)
        while left > 0:
            data = environ["wsgi.input"].read(min(left, self.block_size))
            if not data:
                break
            left -= len(data)

    def _put(self, environ: dict[str, Any], start_response: StartResponse, path: Path) -> Iterable[bytes]:
        left = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"]
        with open(path, "wb") as f:
            while left > 0:
                data = body.read(min(left, self.block_size))
                if not data:
                    break
                f.write(data)
                left -= len(data)
            if left:
                return _answer(start_response, "400 Bad Request")
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        return _answer(start_response, "201 Created")

    def _get(self, environ: dict[str, Any], start_response: StartResponse, path: Path) -> Iterable[bytes]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return _answer(start_response, "404 Not Found")
        size = os.fstat(fd).st_size
        wanted = _byte_range(environ.get("HTTP_RANGE", ""), size)
        if wanted is None:
            start_response("200 OK", [("Content-Length", str(size)), ("Content-Type", "application/octet-stream")])
            return _blocks(fd, self.block_size)
        first, last = wanted
        try:
            data = os.pread(fd, last - first + 1, first)
        finally:
            os.close(fd)
        start_response("206 Partial Content", [
            ("Content-Length", str(len(data))), ("Content-Type", "application/octet-stream"),
            ("Content-Range", f"bytes {first}-{first + len(data) - 1}/{size}")])
        return [data]


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a single ``bytes=A-B`` range inside the file, else None."""
    if not header.startswith("bytes=") or "," in header:
        return None
    a, _, b = header[6:].partition("-")
    if not a.isdigit():
        return None
    first = int(a)
    last = min(int(b), size - 1) if b.isdigit() else size - 1
    return (first, last) if first <= last else None


def _blocks(fd: int, block_size: int) -> Iterable[bytes]:
    try:
        while data := os.read(fd, block_size):
            yield data
    finally:
        os.close(fd)


def _answer(start_response: StartResponse, status: str, headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Length", "0"), *(headers or [])])
    return [b""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fsync", action="store_true", help="fsync each PUT's file before answering")
    parser.add_argument("--auth", action="store_true", help="HTTP Basic authentication (cached accepted headers)")
    parser.add_argument("--limits", action="store_true", help="install davbackup's provider.http_limits")
    parser.add_argument("--user", default="u")
    parser.add_argument("--password", default="p")
    args = parser.parse_args()

    settings = davbackup_server_settings()
    app = FloorApp(Path(args.root), fsync=args.fsync, block_size=settings["block_size"],
                   credentials=(args.user, args.password) if args.auth else None)

    def limits(server: wsgi.Server) -> Callable[[], None] | None:
        if not args.limits:
            return None
        from provider.http_limits import install
        from provider.settings import ServerSettings

        stop: Callable[[], None] = install(server, ServerSettings().http_limits, settings["threads"]).stop
        return stop

    serve(app, args.host, args.port, settings, "cheroot-floor", limits,
          f" fsync={args.fsync} auth={args.auth} limits={args.limits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
