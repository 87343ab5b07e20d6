"""storage.py: what only LocalPackStorage does. The guarantees every backend gives
(storage.py's docstring) are checked for all of them in test_storage_conformance.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from davbackup.pack import PACK_MAGIC, BlobCodec, scan_pack
from davbackup.storage import ZEROS_AHEAD, LocalPackStorage


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


def test_zeros_ahead_keep_small_appends_inside_the_file(tmp_path: Path) -> None:
    """With ``preallocate`` the file is written with zeros past the contents, so a
    small append changes neither size nor block map (its sync is an fdatasync without
    a file-system journal commit); a large append grows the file itself; close cuts
    the zeros off. A walk of the pack stops at them."""
    s = LocalPackStorage(tmp_path / "packs")
    name = "ab" + "0" * 30
    appender = s.create(name)
    appender.preallocate(ZEROS_AHEAD)
    path = tmp_path / "packs" / "ab" / f"{name}.pack"
    blobs = [BlobCodec(bytes(32), bytes(32), 3).seal(bytes([i]) * 32, os.urandom(1000)) for i in range(3)]
    end = len(PACK_MAGIC)
    for blob in blobs[:2]:
        assert appender.append(blob) == end
        end += len(blob)
        appender.sync()
        assert path.stat().st_size == ZEROS_AHEAD
    assert path.read_bytes()[end:] == bytes(ZEROS_AHEAD - end)
    with s.open_stream(name) as stream:
        assert [b.offset for b in scan_pack(stream)] == [len(PACK_MAGIC), len(PACK_MAGIC) + len(blobs[0])]
    large = os.urandom(ZEROS_AHEAD + 5000)
    assert appender.append(large) == end
    end += len(large)
    appender.sync()
    assert path.stat().st_size == end  # no zeros written after a large append
    assert appender.append(blobs[2]) == end  # a small one: zeros ahead again
    end += len(blobs[2])
    assert path.stat().st_size == (end // ZEROS_AHEAD + 1) * ZEROS_AHEAD
    appender.close()
    assert path.stat().st_size == end
    s.close()
