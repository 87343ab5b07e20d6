"""Pack-storage backends for the conformance tests, built the same way in-process and
in a child process (``python -m tests.storage_backends crash`` with a JSON job on
stdin, used to cut a
writer off with SIGKILL after a sync).

A backend is described by a JSON-able spec so that a second, independent instance (a
"fresh process's view", or another node) can be opened on the same packs:

* ``{"kind": "local", "root": DIR}``
* ``{"kind": "s3", "url": "s3://bucket/prefix", "spool": DIR, "cache": DIR | None}``
  (endpoint and credentials from the ``AWS_*`` environment)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from davbackup.storage import LocalPackStorage, PackStorage

CACHE_BYTES = 256 * 1024 * 1024


def open_storage(spec: dict[str, Any]) -> PackStorage:
    if spec["kind"] == "local":
        return LocalPackStorage(Path(spec["root"]))
    from davbackup.storage_cache import PackCache
    from davbackup.storage_s3 import S3PackStorage

    cache = PackCache(Path(spec["cache"]), CACHE_BYTES) if spec.get("cache") else None
    return S3PackStorage.from_url(spec["url"], Path(spec["spool"]), cache)


def crash_after_sync(spec: dict[str, Any], name: str, synced: bytes, unsynced: bytes) -> None:
    """Append and sync ``synced``, append ``unsynced``, then die without any cleanup."""
    storage = open_storage(spec)
    appender = storage.create(name)
    offset = appender.append(synced)
    appender.sync(offset + len(synced))
    appender.append(unsynced)
    print(offset, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1:] != ["crash"]:
        sys.exit("usage: python -m tests.storage_backends crash < JOB_JSON")
    args = json.loads(sys.stdin.read())
    crash_after_sync(args["spec"], args["name"], bytes.fromhex(args["synced"]), bytes.fromhex(args["unsynced"]))
