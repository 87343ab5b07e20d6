"""Tests of several davbackup nodes on a throwaway PostgreSQL and Ceph RGW (issue 11):
real ``davbackup serve --catalog … --packs …`` processes driven by real clients.

Shared fixtures come from the modules registered in ``tests/conftest.py``; the
cluster helpers are in ``tests/cluster_fixtures.py``. ``cluster`` here is a new
repository (fresh database, fresh bucket) for one test, its nodes stopped after it;
``shared_cluster`` is one for a whole test module, with two nodes already serving
(tests sharing it work below paths of their own)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_fixtures import Cluster, create_cluster
from tests.services import S3Bucket, ThrowawayCeph, ThrowawayPostgres, empty_bucket


@pytest.fixture
def cluster(tmp_path: Path, postgres_server: ThrowawayPostgres, s3_bucket: S3Bucket) -> Iterator[Cluster]:
    c = create_cluster(tmp_path / "cluster", postgres_server, s3_bucket)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory, postgres_server: ThrowawayPostgres,
                   ceph_rgw: ThrowawayCeph) -> Iterator[Cluster]:
    """A repository for a whole module, with nodes ``nodes[0]`` ("a") and ``nodes[1]`` ("b")."""
    client = ceph_rgw.client()
    name = "test-" + secrets.token_hex(6)
    client.create_bucket(Bucket=name)
    c = create_cluster(tmp_path_factory.mktemp("cluster"), postgres_server, S3Bucket(ceph_rgw, name))
    try:
        c.start_node("a")
        c.start_node("b")
        yield c
    finally:
        c.stop()
        empty_bucket(client, name)
        client.delete_bucket(Bucket=name)
