#!/usr/bin/env python3
"""``davbackup serve`` with wall-clock accounting of chosen functions (a profiling aid).

    scripts/bench --serve-wrapper scripts/bench_traced_serve.py --only small

Every function named in ``BENCH_TRACE`` (comma list of ``module:Class.method`` or
``module:function``; a default list covers the upload and small-file paths) is
wrapped to add its wall time and call count to a table; when the server exits the
table is written to its stderr (the ``davbackup.log`` of the bench run). Times
include waiting (fsync, locks, GIL), which is what a sampling profiler misses.
Nested functions are counted in each: the table is not additive.

``BENCH_PRELOAD=FILE`` runs a Python file first, e.g. to try a patch before
proposing it.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import os
import sys
import threading
import time
from collections import defaultdict

DEFAULT_TRACE = [
    "provider.request_log:RequestLog.__call__",
    "provider.auth:RepositoryAuthenticator.handle_basic_auth_request",
    "davbackup.users:UserDirectory.verify",
    "provider.dav_provider:DavBackupProvider.get_resource_inst",
    "wsgidav.request_server:RequestServer.do_PUT",
    "wsgidav.request_server:RequestServer.do_GET",
    "wsgidav.request_server:RequestServer.do_PROPFIND",
    "provider.resources:FileResource.begin_write",
    "provider.resources:FileResource.end_write",
    "davbackup.fs:Namespace.open_write",
    "davbackup.writer:FileWriter.write",
    "davbackup.writer:FileWriter.commit",
    "davbackup.writer:FileWriter.finish_chunking",
    "davbackup.chunkstore:ChunkStore.put",
    "davbackup.chunkstore:ChunkStore.make_durable",
    "davbackup.chunkstore:ChunkStore.release",
    "davbackup.storage:LocalAppender.append",
    "davbackup.storage:LocalAppender.sync",
    "davbackup.pack:BlobCodec.seal",
    "davbackup.pack:BlobCodec.open",
    "davbackup.reader:VersionReader.read",
    "davbackup.storage:LocalPackStorage.read",
    "davbackup.catalog:Catalog.write",
    "davbackup.catalog:Catalog._run_batch",
    "davbackup.uploads:UploadManager.discard_path",
    "provider.resources:CollectionResource.get_member_list",
    "provider.properties:CatalogPropertyManager.get_properties",
]

_stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
_lock = threading.Lock()
_started = time.perf_counter()


def _record(name: str, secs: float) -> None:
    with _lock:
        entry = _stats[name]
        entry[0] += secs
        entry[1] += 1


def _wrap(target: str) -> None:
    module_name, _, attr = target.partition(":")
    owner: object = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    func = inspect.getattr_static(owner, name)
    if isinstance(func, (staticmethod, classmethod)):
        print(f"bench_traced_serve: not tracing {target} (static/class method)", file=sys.stderr)
        return
    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def gen_wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return (yield from func(*args, **kwargs))
            finally:
                _record(target, time.perf_counter() - t0)
        setattr(owner, name, gen_wrapper)
    else:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                _record(target, time.perf_counter() - t0)
        setattr(owner, name, wrapper)


def _report() -> None:
    wall = time.perf_counter() - _started
    lines = [f"bench_traced_serve: wall-clock per function over {wall:.1f} s of serving",
             f"{'total s':>9} {'calls':>8} {'ms/call':>9}  function"]
    for name, (secs, calls) in sorted(_stats.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{secs:9.3f} {calls:8d} {1000 * secs / max(calls, 1):9.3f}  {name}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def main() -> int:
    preload = os.environ.get("BENCH_PRELOAD")
    if preload:
        code = compile(open(preload).read(), preload, "exec")
        exec(code, {"__name__": "bench_preload", "__file__": preload})
    targets = [t for t in os.environ.get("BENCH_TRACE", "").split(",") if t] or DEFAULT_TRACE
    for target in targets:
        try:
            _wrap(target)
        except (ImportError, AttributeError) as exc:
            print(f"bench_traced_serve: not tracing {target}: {exc}", file=sys.stderr)
    atexit.register(_report)
    from davbackup.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
