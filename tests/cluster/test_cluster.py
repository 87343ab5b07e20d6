"""Several davbackup nodes on one PostgreSQL catalog and one Ceph RGW bucket (issue 11).

Every test starts real ``davbackup serve --catalog … --packs …`` processes that share
nothing but the database and the bucket (each node has its own temporary local
directory), and drives them with real HTTP clients.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.cluster_fixtures import Cluster
from tests.resume_fixtures import HalfSent
from tests.services import S3Bucket, ThrowawayPostgres
from tests.interop.test_litmus import SUITES, parse_summaries

LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>cluster test</D:owner></D:lockinfo>"
)


def _catalog_value(cluster: Cluster, sql: str) -> object:
    with psycopg.connect(cluster.catalog) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


def test_cli_commands_on_postgres_and_ceph(cluster: Cluster) -> None:
    """init, user, key, stats, check and gc run on --catalog/--packs alone, and the
    repository's identity and key slots are in the bucket, not in a directory."""
    assert "alice" in cluster.cli("user", "list")
    assert "initial" in cluster.cli("key", "list")
    node = cluster.start_node("a")
    s = node.session()
    assert s.request("MKCOL", node.url + "/docs").status_code == 201
    data = os.urandom(300_000)
    assert s.put(node.url + "/docs/a.bin", data=data).status_code == 201
    first = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    time.sleep(1.1)
    assert s.put(node.url + "/docs/a.bin", data=b"replaced").status_code == 204
    node.stop()
    assert "alice" in cluster.cli("stats", "--user", "alice")
    cluster.cli("check", "--read-data")  # exit code 0: no problems
    assert "alice" in cluster.cli("history", "show", "--user", "alice")
    cluster.cli("history", "prune", "--dry-run")
    cluster.cli("restore", "--user", "alice", "--at", first, "--path", "/docs/a.bin")
    cluster.cli("rebuild-index")
    assert "gc:" in cluster.cli("gc")
    node.start()
    assert node.session().get(node.url + "/docs/a.bin").content == data  # restored from history
    node.stop()
    # the catalog is bound to the repository in the bucket: another bucket prefix is refused
    other = cluster.packs.rstrip("/") + "-other"
    result = subprocess.run(
        [*_cli_prefix(), "stats", "--catalog", cluster.catalog, "--packs", other],
        capture_output=True, text=True, env=cluster.env, timeout=120,
    )
    assert result.returncode != 0 and "not a davbackup repository" in result.stderr, result.stderr
    # init refuses a database that already holds a catalog
    again = subprocess.run(
        [*_cli_prefix(), "init", "--catalog", cluster.catalog, "--packs", other],
        capture_output=True, text=True, env=cluster.env, timeout=120,
    )
    assert again.returncode != 0 and "already holds a davbackup catalog" in again.stderr, again.stderr


def _cli_prefix() -> list[str]:
    import sys

    return [sys.executable, "-m", "davbackup"]


@pytest.mark.skipif(shutil.which("litmus") is None, reason="litmus is not installed")
def test_litmus_against_a_node_on_postgres_and_ceph(cluster: Cluster) -> None:
    node = cluster.start_node("a")
    user, password = node.auth("alice")
    result = subprocess.run(["litmus", node.url + "/", user, password], capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    summaries = parse_summaries(output)
    assert set(summaries) == set(SUITES), output
    failures = {suite: s for suite, s in summaries.items() if s[2] or s[1] != s[0]}
    assert not failures, output + node.log()
    assert sum(run for run, _p, _f in summaries.values()) >= 104


def test_two_nodes_serve_one_repository(cluster: Cluster) -> None:
    a, b = cluster.start_node("a"), cluster.start_node("b")
    sa, sb = a.session(), b.session()
    # PUT on A, GET on B
    assert sa.request("MKCOL", a.url + "/shared").status_code == 201
    data = os.urandom(3 * 1024 * 1024 + 123)
    assert sa.put(a.url + "/shared/file.bin", data=data).status_code == 201
    got = sb.get(b.url + "/shared/file.bin")
    assert got.status_code == 200 and got.content == data
    assert got.headers["ETag"] == sa.head(a.url + "/shared/file.bin").headers["ETag"]
    # COPY on A is visible on B at once
    copy = sa.request("COPY", a.url + "/shared/file.bin", headers={"Destination": a.url + "/shared/copy.bin"})
    assert copy.status_code == 201
    assert sb.get(b.url + "/shared/copy.bin").content == data
    # a folder listing on B shows what A did
    listing = sb.request("PROPFIND", b.url + "/shared/", headers={"Depth": "1"})
    assert listing.status_code == 207 and "copy.bin" in listing.text
    # a LOCK taken through A is enforced on B, and B honours its token
    lock = sa.request("LOCK", a.url + "/shared/file.bin", data=LOCK_BODY,
                      headers={"Content-Type": "application/xml", "Timeout": "Second-600"})
    assert lock.status_code == 200, lock.text
    token = lock.headers["Lock-Token"]
    assert sb.put(b.url + "/shared/file.bin", data=b"overwrite").status_code == 423
    assert sb.delete(b.url + "/shared/file.bin").status_code == 423
    assert sb.put(b.url + "/shared/file.bin", data=b"with token", headers={"If": f"({token})"}).status_code == 204
    assert sb.request("UNLOCK", b.url + "/shared/file.bin", headers={"Lock-Token": token}).status_code == 204
    assert sa.put(a.url + "/shared/file.bin", data=b"after unlock").status_code == 204
    assert sb.get(b.url + "/shared/file.bin").content == b"after unlock"
    # dedup across nodes: the same content through A and B is stored once
    chunks_before = _catalog_value(cluster, "SELECT count(*) FROM chunks")
    blob = os.urandom(2 * 1024 * 1024)
    assert sa.put(a.url + "/shared/one.bin", data=blob).status_code == 201
    chunks_mid = _catalog_value(cluster, "SELECT count(*) FROM chunks")
    assert sb.put(b.url + "/shared/two.bin", data=blob).status_code == 201
    assert chunks_mid > chunks_before  # type: ignore[operator]
    assert _catalog_value(cluster, "SELECT count(*) FROM chunks") == chunks_mid
    assert sb.get(b.url + "/shared/one.bin").content == sa.get(a.url + "/shared/two.bin").content == blob
    # MOVE on B, visible on A
    move = sb.request("MOVE", b.url + "/shared/two.bin", headers={"Destination": b.url + "/shared/moved.bin"})
    assert move.status_code == 201
    assert sa.get(a.url + "/shared/two.bin").status_code == 404
    assert sa.get(a.url + "/shared/moved.bin").content == blob
    # the nodes hold different node numbers, and each keeps its own open pack open
    nodes = _catalog_value(cluster, "SELECT count(DISTINCT node) FROM packs WHERE node IS NOT NULL")
    assert nodes == 2
    # a check while both nodes serve finds nothing wrong
    cluster.cli("check")


def test_concurrent_writes_through_two_nodes(cluster: Cluster) -> None:
    """Many small PUTs through both nodes at once: every acknowledged file reads back
    through the other node (node IDs, version IDs and pack names never collide)."""
    a, b = cluster.start_node("a"), cluster.start_node("b")
    a.session().request("MKCOL", a.url + "/many").raise_for_status()
    written: dict[str, bytes] = {}
    errors: list[str] = []

    def writer(node_index: int, worker: int) -> None:
        node = (a, b)[node_index]
        s = node.session()
        for i in range(15):
            name = f"/many/n{node_index}-w{worker}-{i}.txt"
            body = os.urandom(2000 + i)
            r = s.put(node.url + name, data=body)
            if r.status_code == 201:
                written[name] = body
            else:
                errors.append(f"{name}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=writer, args=(n, w)) for n in (0, 1) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(written) == 120
    sa, sb = a.session(), b.session()
    for name, body in written.items():
        other = b if "/n0-" in name else a
        assert (sb if other is b else sa).get(other.url + name).content == body, name


def test_range_put_started_on_a_continues_on_b_after_a_is_killed(cluster: Cluster) -> None:
    a, b = cluster.start_node("a"), cluster.start_node("b")
    data = os.urandom(6 * 1024 * 1024)
    total = len(data)
    url_a, url_b = a.url + "/big.bin", b.url + "/big.bin"
    half = 4 * 1024 * 1024
    r = a.session().put(url_a, data=data[:half], headers={"Content-Range": f"bytes 0-{half - 1}/{total}"})
    assert r.status_code == 308, r.text
    a.kill()  # SIGKILL: no cleanup on A
    sb = b.session()
    ask = sb.put(url_b, data=b"", headers={"Content-Range": f"bytes */{total}"})
    assert ask.status_code == 308
    offset = int(ask.headers["Upload-Offset"])
    assert offset == half
    done = sb.put(url_b, data=data[offset:], headers={"Content-Range": f"bytes {offset}-{total - 1}/{total}"})
    assert done.status_code == 201, done.text
    assert sb.get(url_b).content == data


def test_ietf_upload_started_on_a_continues_on_b_after_a_is_killed(cluster: Cluster) -> None:
    a, b = cluster.start_node("a"), cluster.start_node("b")
    data = os.urandom(3 * 1024 * 1024)
    created = a.session().post(a.url + "/ietf.bin", data=data[:1_000_000], headers={
        "Upload-Complete": "?0", "Upload-Draft-Interop-Version": "8", "Upload-Length": str(len(data))})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    a.kill()
    sb = b.session()
    head = sb.head(b.url + location)
    assert head.status_code == 204 and head.headers["Upload-Offset"] == "1000000"
    done = sb.patch(b.url + location, data=data[1_000_000:], headers={
        "Content-Type": "application/partial-upload", "Upload-Offset": "1000000", "Upload-Complete": "?1"})
    assert done.status_code == 201, done.text
    assert sb.get(b.url + "/ietf.bin").content == data


def test_ietf_upload_resumed_on_b_stops_its_stalled_request_on_a(cluster: Cluster) -> None:
    """The draft's "terminate the previous request" across nodes: a client resumes
    through B while its old PATCH still hangs on A. B asks A (a PostgreSQL
    notification) to stop it; A stores what arrived and lets go of the upload; B
    answers with that offset and takes the rest."""
    a, b = cluster.start_node("a"), cluster.start_node("b")
    data = os.urandom(1_000_000)
    sa, sb = a.session(), b.session()
    created = sa.post(a.url + "/preempted.bin", data=b"", headers={
        "Upload-Complete": "?0", "Upload-Draft-Interop-Version": "8", "Upload-Length": str(len(data))})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    stalled = HalfSent(a.port, "PATCH", location, a.auth(), {
        "Content-Type": "application/partial-upload", "Upload-Offset": "0", "Upload-Complete": "?1"}, data, 400_000)
    try:
        time.sleep(1.0)  # A has read what was sent and waits for more
        started = time.monotonic()
        head = sb.head(b.url + location)
        assert time.monotonic() - started < 10
        assert head.status_code == 204 and head.headers["Upload-Offset"] == "400000", head.headers
        done = sb.patch(b.url + location, data=data[400_000:], headers={
            "Content-Type": "application/partial-upload", "Upload-Offset": "400000", "Upload-Complete": "?1"})
        assert done.status_code == 201, done.text
        assert stalled.status() in (0, 204)  # A ended the old request (without completing the upload)
    finally:
        stalled.cut()
    assert sa.get(a.url + "/preempted.bin").content == data


def test_one_gc_at_a_time_across_the_cluster(cluster: Cluster) -> None:
    """gc takes a cluster-wide advisory lock; a second gc is refused while it runs,
    and gc runs with the grace period while a node serves."""
    node = cluster.start_node("a")
    s = node.session()
    for i in range(3):
        assert s.put(node.url + f"/f{i}.bin", data=os.urandom(200_000)).status_code == 201
    assert s.delete(node.url + "/f0.bin").status_code == 204
    with psycopg.connect(cluster.catalog, autocommit=True) as holder:
        # what a running gc holds (the named lock "gc"; see davbackup/catalog_pg.py)
        from davbackup.catalog_pg import NAMED_CLASS, _named_key

        holder.execute("SELECT pg_advisory_lock(%s, %s)", (NAMED_CLASS, _named_key("gc")))
        result = subprocess.run([*_cli_prefix(), "gc", *cluster.args()], capture_output=True, text=True,
                                env=cluster.env, timeout=120)
        assert result.returncode == 6 and "another gc is running" in result.stderr, result.stderr
    out = cluster.cli("gc")
    assert "grace 3600" in out or "3600" in out, out  # a node is serving: the grace period applies
    for i in (1, 2):
        assert s.get(node.url + f"/f{i}.bin").status_code == 200
    time.sleep(0)


def test_migrate_an_embedded_repository_into_the_cluster(
    tmp_path: Path, postgres_server: ThrowawayPostgres, s3_bucket: S3Bucket
) -> None:
    """Files, history, folders and users of an embedded repository are served by a
    node after `davbackup migrate`; every chunk is verified on the way; the source is
    left as it was; a second migrate into the same database is refused."""
    from tests.server_fixtures import launch

    server = launch(tmp_path / "embedded")
    s = server.session()
    assert s.request("MKCOL", server.url + "/docs").status_code == 201
    first = os.urandom(700_000)
    assert s.put(server.url + "/docs/a.bin", data=first).status_code == 201
    moment = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    time.sleep(1.1)
    assert s.put(server.url + "/docs/a.bin", data=b"second version").status_code == 204
    assert s.put(server.url + "/docs/b.txt", data=b"hello").status_code == 201
    server.stop()
    before = sorted(p.name for p in server.repo.iterdir())
    catalog = postgres_server.url(postgres_server.create_database())
    packs = s3_bucket.url("migrated")
    env = server.env
    out = subprocess.run([*_cli_prefix(), "migrate", "--repo", str(server.repo), "--catalog", catalog,
                          "--packs", packs], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "chunks verified" in out.stdout
    assert sorted(p.name for p in server.repo.iterdir()) == before
    again = subprocess.run([*_cli_prefix(), "migrate", "--repo", str(server.repo), "--catalog", catalog,
                            "--packs", s3_bucket.url("again")], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode != 0 and "already holds a davbackup catalog" in again.stderr
    cluster = Cluster(workdir=tmp_path / "cluster", catalog=catalog, packs=packs, users=server.users)
    try:
        cluster.cli("check", "--read-data")
        node = cluster.start_node("a")
        sn = node.session()
        assert sn.get(node.url + "/docs/a.bin").content == b"second version"
        assert sn.get(node.url + "/docs/b.txt").content == b"hello"
        assert sn.get(node.url + f"/.history/{moment}/docs/a.bin").content == first  # history came along
        assert sn.put(node.url + "/docs/c.bin", data=first).status_code == 201  # new IDs do not collide
        assert sn.get(node.url + "/docs/c.bin").content == first
        bob = node.session("bob")
        assert bob.put(node.url + "/mine.txt", data=b"bob").status_code == 201
    finally:
        cluster.stop()


def test_racing_locks_on_two_nodes_grant_one(cluster: Cluster) -> None:
    """Exclusive LOCKs of one resource sent to both nodes at the same moment: exactly
    one is granted each round (the conflict check and the insert are one serialised
    write across the cluster), the other answers 423."""
    a, b = cluster.start_node("a"), cluster.start_node("b")
    sa, sb = a.session(), b.session()
    for i in range(8):
        assert sa.put(a.url + f"/race{i}.txt", data=b"x").status_code == 201
    for i in range(8):
        barrier = threading.Barrier(2)
        answers: list[int] = []

        def lock(session, node, i=i) -> None:  # type: ignore[no-untyped-def]
            barrier.wait()
            r = session.request("LOCK", node.url + f"/race{i}.txt", data=LOCK_BODY,
                                headers={"Content-Type": "application/xml", "Timeout": "Second-60"})
            answers.append(r.status_code)

        threads = [threading.Thread(target=lock, args=(sa, a)), threading.Thread(target=lock, args=(sb, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) == [200, 423], (i, answers)
