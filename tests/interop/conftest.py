"""Tests of real WebDAV clients against a real server: litmus, rclone, davfs2, cadaver, curl, webdavclient3, GVfs, replayed desktop clients.

Shared fixtures come from the modules registered in ``tests/conftest.py``; the
mount tests' world-readable temp dir is here."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A temp dir the davfs2 user can enter (0755), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="davbackup-mount-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
