"""`davbackup recover --catalog URL --packs URL`: the object store alone plus the
passphrase is a complete backup of a cluster (issue 11, DESIGN.md §20.8).

Two nodes on the throwaway PostgreSQL and Ceph RGW take a randomized WebDAV workload
(tests/recover_workload.py: PUT, overwrite, range PUT, IETF uploads, MKCOL, MOVE,
COPY, DELETE, PROPPATCH, restores from ``/.history/``) for three users, one added
and given a quota by the CLI; then the database is dropped, `recover` rebuilds the
catalog in a new one, and a node on it must show every user exactly what the cluster
showed: tree, bytes, ETags, properties, quotas and every point in ``/.history/``.
A node SIGKILLed in the middle of the workload loses no acknowledged write; a write
whose journal record cannot reach the object store is refused and commits nothing.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from tests.cluster_fixtures import Cluster
from tests.recover_workload import XML, Workload, differences, drive, live_as_model, observe
from tests.server_fixtures import davbackup
from tests.services import S3Bucket, ThrowawayPostgres

EXTRA_USER = ("carol", "carol-password", "rw")


def add_carol(cluster: Cluster) -> dict[str, str]:
    name, password, role = EXTRA_USER
    cluster.cli("user", "add", name, "--role", role, stdin=password + "\n")
    cluster.cli("user", "quota", name, "--quota", "500M")
    cluster.users[name] = (password, role)
    return {n: pw for n, (pw, r) in cluster.users.items() if r == "rw"}


def drop_and_recover(cluster: Cluster, postgres: ThrowawayPostgres) -> str:
    """Drop the cluster's database (every node is stopped), rebuild the catalog in a
    new one with the CLI; returns the CLI's output."""
    old = cluster.catalog.rsplit("/", 1)[1]
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{old}" WITH (FORCE)')
    cluster.catalog = postgres.url(postgres.create_database())
    result = davbackup(["recover", *cluster.args()], cluster.env)
    out = result.stdout
    assert "locks and unfinished upload sessions" in out and "could not place" not in out, out + result.stderr
    return out


def workload_on(nodes: list, work: Workload, steps: int) -> list[str]:
    done = []
    for i in range(steps):
        work.base = nodes[i % len(nodes)].url  # any request may go to any node
        done.append(work.step())
    return done


@pytest.mark.slow
def test_recover_rebuilds_a_dropped_cluster_catalog(cluster: Cluster, postgres_server: ThrowawayPostgres) -> None:
    seed = random.randrange(1 << 30)
    passwords = add_carol(cluster)
    a, b = cluster.start_node("a"), cluster.start_node("b")
    work = Workload(a.url, passwords, seed)
    ops = workload_on([a, b], work, 50)
    work._mark("alice", work.sessions["alice"], work.model.users["alice"], work.model.users["alice"])
    ops += workload_on([b, a], work, 30)
    shown = observe(a.url, passwords, quotas=frozenset({"carol"}))
    assert live_as_model(shown) == work.model.users, f"seed {seed}: {ops}"
    assert observe(b.url, passwords, quotas=frozenset({"carol"})) == shown
    cluster.stop()

    out = drop_and_recover(cluster, postgres_server)
    assert f"{len(cluster.users)} users" in out, out
    node = cluster.start_node("c")
    again = observe(node.url, passwords, quotas=frozenset({"carol"}))
    assert again == shown, f"seed {seed}: {differences(shown, again)}"
    work.base = node.url
    workload_on([node], work, 5)  # it goes on: the journal continues where it ended
    assert live_as_model(observe(node.url, passwords, history=False)) == work.model.users
    cluster.stop()
    result = davbackup(["check", "--read-data", *cluster.args()], cluster.env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_recover_after_a_sigkill_keeps_every_acknowledged_write(cluster: Cluster,
                                                                postgres_server: ThrowawayPostgres) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    passwords = {n: pw for n, (pw, r) in cluster.users.items() if r == "rw"}
    a, b = cluster.start_node("a"), cluster.start_node("b")
    work = Workload(a.url, passwords, seed)
    workload_on([a, b], work, 10)
    stop = threading.Event()
    failure: list[BaseException] = []
    worker = threading.Thread(target=drive, args=(work, stop, failure, [a.url, b.url]))
    worker.start()
    time.sleep(rng.uniform(1.0, 4.0))
    a.kill()
    time.sleep(0.5)
    stop.set()
    worker.join(120)
    assert not worker.is_alive()
    b.kill()  # both nodes gone, and then the database too
    candidates = [work.model.users]
    if failure and work.before is not None and work.after is not None:
        candidates = [work.before.users, work.after.users]
    drop_and_recover(cluster, postgres_server)
    node = cluster.start_node("c")
    live = live_as_model(observe(node.url, passwords, history=False))
    assert live in candidates, f"seed {seed}: an acknowledged write is missing"


def test_a_journal_write_the_store_refuses_commits_nothing(cluster: Cluster, s3_bucket: S3Bucket,
                                                            postgres_server: ThrowawayPostgres) -> None:
    """MKCOL and PROPPATCH write no chunk: their journal record is the only object
    they need. With the object store down they are answered 503 and change nothing."""
    node = cluster.start_node("a")
    s = node.session()
    assert s.request("MKCOL", node.url + "/docs").status_code == 201
    assert s.put(node.url + "/docs/a.txt", data=b"kept").status_code == 201
    prop = ('<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
            '<x:colour xmlns:x="urn:x">{}</x:colour></D:prop></D:set></D:propertyupdate>')
    assert s.request("PROPPATCH", node.url + "/docs/a.txt", data=prop.format("blue"), headers=XML).status_code == 207
    ceph = s3_bucket.ceph
    ceph.stop_gateway()
    try:
        refused = s.request("MKCOL", node.url + "/never")
        assert refused.status_code in (503, 507), refused.text
        assert int(refused.headers["Retry-After"]) > 0
        patch = s.request("PROPPATCH", node.url + "/docs/a.txt", data=prop.format("red"), headers=XML)
        # (a multistatus: the property's own status is the failure, none is 200)
        assert patch.status_code in (207, 503, 507) and "200 OK" not in patch.text, (patch.status_code, patch.text)
        assert s.request("PROPFIND", node.url + "/never", headers={"Depth": "0"}).status_code == 404
        shown = s.request("PROPFIND", node.url + "/docs/a.txt", headers={"Depth": "0"}).text
        assert ">blue<" in shown and ">red<" not in shown, shown
    finally:
        ceph.start_gateway()
    deadline = time.monotonic() + 60
    while (r := s.request("MKCOL", node.url + "/after")).status_code != 201:
        assert r.status_code == 503 and time.monotonic() < deadline, r.status_code
        time.sleep(0.5)
    passwords = {n: pw for n, (pw, r) in cluster.users.items() if r == "rw"}
    shown_all = observe(node.url, passwords)
    cluster.stop()
    drop_and_recover(cluster, postgres_server)
    node = cluster.start_node("b")
    assert observe(node.url, passwords) == shown_all


def test_recover_refuses_a_database_that_holds_a_catalog(cluster: Cluster) -> None:
    result = subprocess.run([sys.executable, "-m", "davbackup", "recover", *cluster.args()], capture_output=True,
                            text=True, env=cluster.env, timeout=120)
    assert result.returncode == 2 and "--force" in result.stderr, result.stderr


def test_bucket_has_records_of_every_node(cluster: Cluster) -> None:
    """Each node writes its records to journal packs of its own, all in one sequence."""
    a, b = cluster.start_node("a"), cluster.start_node("b")
    for i in range(6):
        node = (a, b)[i % 2]
        assert node.session().put(node.url + f"/f{i}.txt", data=b"x" * i).status_code == 201
    with psycopg.connect(cluster.catalog) as conn:
        packs = conn.execute("SELECT name, first_seq, last_seq FROM journal_packs WHERE kind='journal'").fetchall()
        seq = conn.execute("SELECT value FROM meta WHERE key='journal_seq'").fetchone()
    assert len(packs) >= 2, packs  # (a and b)
    assert seq is not None and max(p[2] for p in packs) == int(seq[0])
