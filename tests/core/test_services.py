"""tests/services.py: the throwaway PostgreSQL and Ceph RGW really serve what we need.

These pin the facts the scale-out backends rely on (not davbackup code): PostgreSQL
accepts connections on its socket and its loopback port and has advisory locks; the
gateway checks S3 signatures, serves ranged GETs and completes multipart uploads.
And a throwaway PostgreSQL does not outlive a test run that is killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import ROOT, S3Bucket, ThrowawayCeph, ThrowawayPostgres, _pg_run_as


def test_postgres_socket_port_and_advisory_lock(postgres_server: ThrowawayPostgres) -> None:
    import psycopg

    db = postgres_server.create_database()
    with psycopg.connect(postgres_server.conninfo(db)) as a, psycopg.connect(postgres_server.url(db)) as b:
        assert a.execute("SHOW server_version").fetchone()[0].startswith("15")
        assert a.execute("SELECT pg_try_advisory_lock(42)").fetchone()[0] is True
        assert b.execute("SELECT pg_try_advisory_lock(42)").fetchone()[0] is False  # other session
        a.execute("SELECT pg_advisory_unlock(42)")
        assert b.execute("SELECT pg_try_advisory_lock(42)").fetchone()[0] is True
        a.execute("CREATE TABLE t (k int PRIMARY KEY)")
        a.execute("INSERT INTO t VALUES (1)")
        a.commit()
        assert b.execute("SELECT count(*) FROM t").fetchone()[0] == 1


def test_rgw_checks_signatures(ceph_rgw: ThrowawayCeph) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    wrong = boto3.client(
        "s3", endpoint_url=ceph_rgw.endpoint, aws_access_key_id=ceph_rgw.access_key,
        aws_secret_access_key="not-the-secret", region_name=ceph_rgw.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as info:
        wrong.list_buckets()
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_rgw_ranged_get_and_multipart(s3_bucket: S3Bucket) -> None:
    client = s3_bucket.ceph.client()
    part = os.urandom(5 * 1024 * 1024)
    upload = client.create_multipart_upload(Bucket=s3_bucket.name, Key="big")
    parts = []
    for number, body in enumerate([part, part[::-1], b"tail"], start=1):
        etag = client.upload_part(Bucket=s3_bucket.name, Key="big", UploadId=upload["UploadId"],
                                  PartNumber=number, Body=body)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    # invisible until completed
    assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket.name)
    client.complete_multipart_upload(Bucket=s3_bucket.name, Key="big", UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
    size = client.head_object(Bucket=s3_bucket.name, Key="big")["ContentLength"]
    assert size == 2 * len(part) + 4
    got = client.get_object(Bucket=s3_bucket.name, Key="big", Range=f"bytes={len(part) - 3}-{len(part) + 2}")
    assert got["Body"].read() == part[-3:] + part[::-1][:3]


def _postgres_runs(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=3) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


def test_postgres_is_stopped_and_removed_when_the_process_that_started_it_dies() -> None:
    """A test run killed outright (a timeout's SIGKILL) must not leave its PostgreSQL
    running and its data directory behind: the watchdog (tests/pg_watchdog.py) stops
    the server and removes the directory once the starting process is gone."""
    starter = (
        "import sys, tempfile, time\n"
        "from pathlib import Path\n"
        "from tests.services import ThrowawayPostgres, free_port\n"
        "pg = ThrowawayPostgres(base=Path(tempfile.mkdtemp(prefix='davbackup-pg-')), port=free_port())\n"
        "pg.start()\n"
        "print(pg.base, pg.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", starter], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    base: Path | None = None
    port = 0
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, "the starter printed nothing (PostgreSQL did not start?)"
        base, port = Path(line.split()[0]), int(line.split()[1])
        assert (base / "data").is_dir() and _postgres_runs(port)
        proc.kill()  # SIGKILL: no atexit, no finally
        proc.wait()
        deadline = time.monotonic() + 60
        while base.exists() or _postgres_runs(port):
            assert time.monotonic() < deadline, "PostgreSQL or its directory outlived the killed process by 60 s"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        if base is not None and base.exists():  # the watchdog failed: do its job, after the verdict
            ThrowawayPostgres(base=base, port=port, _as=_pg_run_as()).stop()
