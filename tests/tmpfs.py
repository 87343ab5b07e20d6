"""A real, small filesystem for disk-full tests: a tmpfs mounted for one test (root only)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_tmpfs(mountpoint: Path, size: str, mode: str = "0700") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (mount's syntax: ``4m``, ``64m``) on a new directory
    ``mountpoint``; unmount it afterwards. CI runs the tests as root."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root to mount a tmpfs (scripts/test runs as root in CI)")
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(path: Path) -> None:
    """Write zeros to a new file ``path`` until its file system refuses. Unbuffered: a
    buffered file would keep the block that did not fit and raise ENOSPC again on close."""
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError:
            pass
