"""A node whose PostgreSQL goes away answers 503 with Retry-After, loses nothing it
acknowledged, and serves again by itself once the database is back (issue 11)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_fixtures import Cluster, create_cluster
from tests.services import S3Bucket, ThrowawayPostgres, free_port


@pytest.fixture
def own_postgres() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL of this test's own: it is stopped and started again on purpose."""
    server = ThrowawayPostgres(base=Path(tempfile.mkdtemp(prefix="davbackup-pg-")), port=free_port())
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001
        server.stop()
        pytest.fail(f"cannot start the throwaway PostgreSQL: {exc}", pytrace=False)
    yield server
    server.stop()


def test_postgres_outage_answers_503_and_recovers(
    tmp_path: Path, own_postgres: ThrowawayPostgres, s3_bucket: S3Bucket
) -> None:
    cluster: Cluster = create_cluster(tmp_path / "cluster", own_postgres, s3_bucket)
    try:
        node = cluster.start_node("a")
        s = node.session()
        before = os.urandom(200_000)
        assert s.put(node.url + "/before.bin", data=before).status_code == 201
        own_postgres.halt()
        during = s.put(node.url + "/during.bin", data=b"not stored")
        assert during.status_code == 503, during.text
        assert int(during.headers["Retry-After"]) > 0
        assert s.get(node.url + "/before.bin").status_code == 503
        own_postgres.resume()
        deadline = time.monotonic() + 30
        while True:
            after = s.put(node.url + "/after.bin", data=b"stored")
            if after.status_code == 201:
                break
            assert after.status_code == 503 and time.monotonic() < deadline, after.status_code
            time.sleep(0.5)
        assert s.get(node.url + "/before.bin").content == before
        assert s.get(node.url + "/during.bin").status_code == 404
        assert s.get(node.url + "/after.bin").content == b"stored"
        assert node.proc is not None and node.proc.poll() is None
    finally:
        cluster.stop()
