"""Tests of several davbackup nodes on a throwaway PostgreSQL and Ceph RGW (issue 11):
real ``davbackup serve --catalog … --packs …`` processes driven by real clients.

Shared fixtures come from the modules registered in ``tests/conftest.py``; the
cluster helpers are in ``tests/cluster_fixtures.py``. ``cluster`` here is a new
repository (fresh database, fresh bucket) for one test, its nodes stopped after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_fixtures import Cluster, create_cluster
from tests.interop.conftest import public_tmp  # noqa: F401 - the davfs2 mounts' temp dir
from tests.services import S3Bucket, ThrowawayPostgres


@pytest.fixture
def cluster(tmp_path: Path, postgres_server: ThrowawayPostgres, s3_bucket: S3Bucket) -> Iterator[Cluster]:
    c = create_cluster(tmp_path / "cluster", postgres_server, s3_bucket)
    try:
        yield c
    finally:
        c.stop()
