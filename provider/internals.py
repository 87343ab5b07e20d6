"""Every private member of WsgiDAV and cheroot that davbackup relies on, in one place.

WsgiDAV offers no public hook for some things a provider needs (checking ``If``
headers and locks the way its own PUT does, holding a write transaction), and
cheroot none for reading one transfer-coding chunk at a time. Code elsewhere calls
the wrappers below instead of the private names, and subclasses that override a
private method are listed in :data:`OVERRIDES`. :func:`verify` checks that all of
them still exist; the server calls it at start and ``tests/provider/test_provider_internals.py``
runs it, so an upgrade that removes or renames one fails loudly instead of silently
bypassing an override. ``pyproject.toml`` pins the versions this was checked against.
"""

from __future__ import annotations

import inspect
import re
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import ParseResult

import wsgidav.request_server as _request_server_module
from cheroot.makefile import StreamReader
from cheroot.server import ChunkedRFile, KnownLengthRFile
from wsgidav.dav_error import HTTP_LOCKED, DAVError
from wsgidav.dir_browser import WsgiDavDirBrowser, _dir_browser
from wsgidav.lock_man.lock_manager import LockManager, normalize_lock_root
from wsgidav.request_server import RequestServer

Environ = dict[str, Any]

#: the share of WsgiDAV's dir browser assets (``wsgidav.dir_browser._dir_browser``)
ASSET_SHARE: str = _dir_browser.ASSET_SHARE


# --- WsgiDAV RequestServer ------------------------------------------------------------


def dav_provider(server: RequestServer) -> Any:
    """The provider a request server works on (``RequestServer._davProvider``)."""
    return server._davProvider


def evaluate_if_headers(server: RequestServer, res: Any, environ: Environ) -> None:
    """Evaluate ``If``, ``If-Match``, ``If-None-Match`` ... for ``res`` (None: no resource)
    as WsgiDAV does before a write; raises ``DAVError`` 412/304."""
    server._evaluate_if_headers(res, environ)


def check_write_permission(server: RequestServer, res: Any, depth: str, environ: Environ) -> None:
    """Raise ``DAVError`` 423 unless the request may write ``res`` (locks, submitted tokens)."""
    server._check_write_permission(res, depth, environ)


def write_transaction(server: RequestServer, res: Any, environ: Environ) -> AbstractContextManager[Any]:
    """WsgiDAV's write transaction around a change of ``res`` (the context manager its
    PUT holds while writing: ``begin_write``/``end_write`` bookkeeping and errors)."""
    return server._write_transaction(res, environ)


# --- WsgiDAV's lock manager --------------------------------------------------------------


def begin_write(lock_manager: LockManager, url: str, principal: str) -> str:
    """WsgiDAV's ``LockManager._begin_write_transaction(url=url, token_list=[],
    principal=principal)``: under the lock manager's lock, refuse (423) if a lock
    conflicts, else mark ``url`` as being written (no LOCK is granted on it until
    :func:`end_write`); returns the URL as marked. While no lock is held at all
    nothing can conflict, and the walk over the URL's folders is skipped (a direct
    PUT's answer costs 20-30 µs less: provider/put_direct.py)."""
    root = normalize_lock_root(url)
    lock_manager._lock.acquire_write()
    try:
        holds_any = getattr(lock_manager.storage, "holds_any", None)  # provider.locks' storage
        if holds_any is None or holds_any():
            conflicts = lock_manager._get_write_conflicts(root, "0", [], principal)
            if len(conflicts.hrefs) > 0:
                raise DAVError(HTTP_LOCKED, err_condition=conflicts)
        active = lock_manager._active_writes
        active[root] = active.get(root, 0) + 1
    finally:
        lock_manager._lock.release()
    return root


def end_write(lock_manager: LockManager, marked: str) -> None:
    """The end of :func:`begin_write` (``LockManager._end_write_transaction``)."""
    lock_manager._end_write_transaction(marked)


# --- WsgiDAV's COPY/MOVE Destination ------------------------------------------------------

_URL = re.compile(r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):)?(?://(?P<netloc>[^/]*))?(?P<path>.*)", re.DOTALL)


def parse_unquoted_destination(url: str, scheme: str = "", allow_fragments: bool = True) -> ParseResult:
    """Split a Destination that WsgiDAV has already percent-decoded.

    ``RequestServer._copy_or_move`` decodes the header first and then calls
    ``urlparse``, which cuts a ``;...`` suffix of the last segment off as "parameters"
    and everything after a ``?`` off as a query: a MOVE to ``a;b.txt`` (davfs2 sends
    ``;`` as it is) or to ``what%3F.txt`` created ``a`` or ``what``. Once decoded, a
    ``;`` or ``?`` can only be part of a name, so here only the scheme and the host
    are split off and all the rest is the path.
    """
    del allow_fragments  # nothing is a fragment or a query in a decoded Destination
    match = _URL.fullmatch(url)
    assert match is not None  # every part of the pattern is optional
    return ParseResult(match["scheme"] or scheme, match["netloc"] or "", match["path"], "", "", "")


def install_destination_parser() -> None:
    """Make WsgiDAV's COPY/MOVE use :func:`parse_unquoted_destination` (its module's
    ``urlparse`` name is used for the Destination only; :func:`problems` checks that)."""
    _request_server_module.urlparse = parse_unquoted_destination


# --- cheroot request bodies ------------------------------------------------------------


def chunked_source(stream: Any, depth: int = 4) -> ChunkedRFile | None:
    """cheroot's ``ChunkedRFile`` behind ``wsgi.input`` and its wrappers, or None.

    davbackup's own wrappers keep the stream they wrap in ``_stream``; it is looked up
    in the instance dict, not with ``getattr``, because they forward unknown
    attributes to the wrapped stream.
    """
    for _ in range(depth):
        if isinstance(stream, ChunkedRFile):
            return stream
        stream = vars(stream).get("_stream") if hasattr(stream, "__dict__") else None
        if stream is None:
            return None
    return None


def read_one_chunk(source: ChunkedRFile, n: int | None) -> bytes:
    """At most ``n`` bytes of the current transfer-coding chunk (b"" at the end).

    cheroot's own ``read(n)`` collects several chunks and loses all of them when the
    body breaks off in the next one; ``_fetch`` reads exactly one into ``buffer``.
    """
    if not source.buffer:
        source._fetch()  # type: ignore[attr-defined]  # the private member this module wraps
    take = len(source.buffer) if n is None or n < 0 else n
    data, source.buffer = source.buffer[:take], source.buffer[take:]
    return bytes(data)


def read_block(stream: Any, size: int) -> bytes | bytearray:
    """``stream.read(size)`` for a request body, possibly as a new bytearray the caller
    owns (a large PUT's blocks, handed to the writer without another copy).

    A wrapper of davbackup's that defines ``read_block`` itself is asked for it (so it
    keeps its bookkeeping). cheroot's ``KnownLengthRFile`` over its socket reader is
    read into the new buffer (:func:`read_into`). Its ``read(n)`` goes through
    ``_pyio``, which zero-fills an ``n``-byte buffer per ``recv``, copies each piece
    out of it, joins the pieces and slices the result: four to five passes over
    every byte of a 1 MiB block. Anything else is read as it is.
    """
    own = getattr(type(stream), "read_block", None)
    if own is not None:
        return own(stream, size)
    if not _known_length(stream):
        return stream.read(size)
    n = min(size, stream.remaining)
    if n <= 0:
        return b""
    block = bytearray(n)
    with memoryview(block) as view:
        got = _read_known(stream, view)
    if got < n:
        del block[got:]
    return block


def read_into(stream: Any, view: memoryview) -> int:
    """Fill ``view`` with the next bytes of a request body; returns how many, fewer
    than ``len(view)`` only at the body's end (0: nothing was left).

    Like :func:`read_block`, but into the caller's buffer (a large PUT reads straight
    into the chunker's segments, :meth:`davbackup.writer.FileWriter.fill`). cheroot's
    ``KnownLengthRFile`` over its socket reader gives first what the reader holds
    buffered, if anything (``read1``, which would otherwise receive 8 KiB through
    ``_pyio`` first), then the socket's ``readinto``; anything else is read with
    ``read`` and copied in.
    """
    own = getattr(type(stream), "read_into", None)
    if own is not None:
        return int(own(stream, view))
    if _known_length(stream):
        return _read_known(stream, view)
    got, n = 0, len(view)
    while got < n:
        data = stream.read(n - got)
        if not data:
            break
        view[got : got + len(data)] = data
        got += len(data)
    return got


def _known_length(stream: Any) -> bool:
    return type(stream) is KnownLengthRFile and isinstance(stream.rfile, StreamReader)


def _read_known(stream: KnownLengthRFile, view: memoryview) -> int:
    """:func:`read_into` of cheroot's ``KnownLengthRFile`` over its socket reader."""
    n = min(len(view), stream.remaining)
    if n <= 0:
        return 0
    reader = stream.rfile
    assert isinstance(reader, StreamReader)
    got = 0
    if reader.has_data():  # what it holds first (its read1 would recv 8 KiB when it holds nothing)
        first = reader.read1(n)
        got = len(first)
        view[:got] = first
    while got < n:  # its buffer is empty now: the rest comes from the socket
        more = reader.raw.readinto(view[got:n])
        if not more:
            break  # the end of the stream (cheroot's sockets block, with a timeout)
        got += more
    stream.remaining -= got
    reader.bytes_read += got  # as its read() counts
    return got


#: attributes that lead from ``wsgi.input`` to the socket: davbackup's wrappers
#: (``_stream``), cheroot's rfiles (``rfile``), ``io.BufferedReader`` (``raw``) and
#: ``socket.SocketIO`` (``_sock``)
_SOCKET_PATH = ("_stream", "rfile", "raw", "_sock")


def connection_socket(stream: Any, depth: int = 6) -> socket.socket | None:
    """The connection's socket behind ``wsgi.input``; None if the layout differs."""
    for _ in range(depth):
        if isinstance(stream, socket.socket):
            return stream
        stream = next((getattr(stream, name) for name in _SOCKET_PATH
                       if getattr(stream, name, None) is not None), None)
        if stream is None:
            return None
    return stream if isinstance(stream, socket.socket) else None


# --- what verify() checks ----------------------------------------------------------------

#: (class, private method, its parameters after ``self``) called through the wrappers above
CALLED: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (RequestServer, "_evaluate_if_headers", ("res", "environ")),
    (RequestServer, "_check_write_permission", ("res", "depth", "environ")),
    (RequestServer, "_write_transaction", ("res", "environ")),
    (ChunkedRFile, "_fetch", ()),
    # provider.put_direct.begin_write is _begin_write_transaction with a shortcut
    (LockManager, "_begin_write_transaction", ("url", "token_list", "principal", "depth")),
    (LockManager, "_get_write_conflicts", ("url", "depth", "token_list", "principal")),
    (LockManager, "_end_write_transaction", ("url",)),
)

#: (class, private method, parameters) that davbackup's subclasses override: if the
#: upstream name changed, the override would silently never run
OVERRIDES: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (RequestServer, "_evaluate_if_headers", ("res", "environ")),
    (RequestServer, "_check_write_permission", ("res", "depth", "environ")),
    (RequestServer, "_send_response", ("environ", "start_response", "root_res", "success_code", "error_list")),
    (WsgiDavDirBrowser, "_get_context", ("environ", "dav_res")),
    # WsgiDAV 4.4 builds its DAVError with the wrong signature (GET of a folder with a body)
    (WsgiDavDirBrowser, "_fail", ("value", "context_info", "src_exception", "err_condition")),
)

#: instance attributes set by constructors: (class, attribute)
ATTRIBUTES: tuple[tuple[type, str], ...] = (
    (RequestServer, "_davProvider"),
    (ChunkedRFile, "buffer"),
    (ChunkedRFile, "rfile"),
    (KnownLengthRFile, "rfile"),
    (KnownLengthRFile, "remaining"),
    (StreamReader, "bytes_read"),
)

#: instance attributes used only in this module (begin_write), checked like ATTRIBUTES;
#: apart because other classes have members of these names too
OWN_ATTRIBUTES: tuple[tuple[type, str], ...] = (
    (LockManager, "_lock"),
    (LockManager, "_active_writes"),
)


class InternalsChanged(RuntimeError):
    """An upgraded WsgiDAV or cheroot lacks a private member davbackup relies on."""


Member = tuple[type, str, tuple[str, ...]]


def problems(methods: tuple[Member, ...] = CALLED + OVERRIDES,
             attributes: tuple[tuple[type, str], ...] = ATTRIBUTES) -> Iterator[str]:
    """What is missing or changed, one line each (nothing when all is as expected)."""
    for cls, name, params in methods:
        member = getattr(cls, name, None)
        if not callable(member):
            yield f"{cls.__module__}.{cls.__qualname__}.{name} is gone"
            continue
        found = tuple(inspect.signature(member).parameters)[1:]
        if found != params:
            yield f"{cls.__module__}.{cls.__qualname__}.{name}{found} != {params}"
    for cls, attribute in (*attributes, *OWN_ATTRIBUTES):
        source = inspect.getsource(cls)
        if f"self.{attribute} =" not in source:
            yield f"{cls.__module__}.{cls.__qualname__} no longer sets self.{attribute}"
    copy_or_move = getattr(RequestServer, "_copy_or_move", None)
    uses = re.findall(r"\burlparse\(", inspect.getsource(_request_server_module))
    if copy_or_move is None or "urlparse(http_destination" not in inspect.getsource(copy_or_move) \
            or len(uses) != 1:
        yield "wsgidav.request_server no longer parses the Destination (only) with urlparse"
    if not isinstance(ASSET_SHARE, str) or not ASSET_SHARE.startswith("/"):
        yield f"wsgidav.dir_browser._dir_browser.ASSET_SHARE is {ASSET_SHARE!r}"


def verify() -> None:
    """Raise :class:`InternalsChanged` naming every private member that changed."""
    found = list(problems())
    if found:
        raise InternalsChanged(
            "this WsgiDAV/cheroot differs from the versions davbackup was tested with "
            "(see pyproject.toml): " + "; ".join(found)
        )
