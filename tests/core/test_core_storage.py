"""storage.py: what only LocalPackStorage does. The guarantees every backend gives
(storage.py's docstring) are checked for all of them in test_storage_conformance.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from davbackup.pack import PACK_MAGIC
from davbackup.storage import LocalPackStorage


def test_handle_cache_is_bounded(tmp_path: Path) -> None:
    s = LocalPackStorage(tmp_path / "packs", max_open=4)
    names = [f"{i:02x}" + "6" * 30 for i in range(20)]
    for n in names:
        s.create(n).close()
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        for n in names:
            assert s.read(n, 0, 8) == PACK_MAGIC
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 4
    s.close()
