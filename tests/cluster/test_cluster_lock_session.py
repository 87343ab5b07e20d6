"""A node whose catalog lock session is lost never writes to the packs it had open
(DESIGN.md §7.5, "Nodes and packs"): while its node lock was free another node may
have sealed them, and gc may then rewrite or delete them.

Real PostgreSQL and Ceph RGW; the lock session is ended with ``pg_terminate_backend``
as a PostgreSQL restart or a network cut would end it."""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

from davbackup.catalog_pg import NODE_CLASS
from davbackup.storage_s3 import pack_key, segment_prefix
from tests.cluster_fixtures import Cluster, Node
from tests.resume_fixtures import HalfSent
from tests.services import S3Bucket


def _rows(cluster: Cluster, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(cluster.catalog) as conn:
        return list(conn.execute(sql, params).fetchall())


def _pack_objects(cluster: Cluster, bucket: S3Bucket, name: str) -> dict[str, int]:
    """The objects of one pack in the bucket (whole pack and segments), with their sizes."""
    client = bucket.ceph.client()
    prefix = cluster.packs.removeprefix(f"s3://{bucket.name}/").strip("/")
    found: dict[str, int] = {}
    for key in (pack_key(name), segment_prefix(name)):
        listed = client.list_objects_v2(Bucket=bucket.name, Prefix=f"{prefix}/{key}")
        found.update({o["Key"]: o["Size"] for o in listed.get("Contents", [])})
    return found


def _node_number(cluster: Cluster) -> int:
    """The node number of the only serving node (the one whose node lock is held)."""
    held = _rows(cluster, "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
                 " AND granted", (NODE_CLASS,))
    assert len(held) == 1, held
    return int(held[0][0])


def _lose_lock_session_and_seal(cluster: Cluster, node_number: int) -> None:
    """End the node's lock session, then do what another node starting in that moment
    does (seal every open pack whose node lock is free), holding the node's lock
    meanwhile so the victim cannot take it back in between."""
    with psycopg.connect(cluster.catalog, autocommit=True) as other:
        for _attempt in range(10):
            pids = other.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
                                 " AND objid = %s AND granted", (NODE_CLASS, node_number)).fetchall()
            assert len(pids) == 1, pids
            assert other.execute("SELECT pg_terminate_backend(%s)", (pids[0][0],)).fetchone() == (True,)
            deadline = time.monotonic() + 5
            got = False
            while not got and time.monotonic() < deadline:
                got = bool(other.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                         (NODE_CLASS, node_number)).fetchone()[0])  # type: ignore[index]
            if got:
                break
            # the victim took its lock back first (its keeper runs every 5 s): again
        else:
            raise AssertionError("could not catch the node's lock free")
        # chunk_index.seal_open_packs, as a starting node runs it (the trigger lets it
        # seal another node's pack only while that node's lock is free)
        with other.transaction():
            other.execute("UPDATE packs SET state = 'sealed' WHERE state = 'open'")
        other.execute("SELECT pg_advisory_unlock(%s, %s)", (NODE_CLASS, node_number))


def test_lost_lock_session_gives_up_the_open_packs(cluster: Cluster, s3_bucket: S3Bucket) -> None:
    a = cluster.start_node("a")
    sa = a.session()
    keep, drop, pending = os.urandom(300_000), os.urandom(300_000), os.urandom(16 << 20)
    assert sa.put(a.url + "/keep.bin", data=keep).status_code == 201
    assert sa.put(a.url + "/drop.bin", data=drop).status_code == 201
    number = _node_number(cluster)
    opened = _rows(cluster, "SELECT id, name FROM packs WHERE state = 'open' AND node = %s", (number,))
    assert len(opened) == 1, opened
    old_id, old_name = opened[0]
    # an upload whose first chunks are appended to that pack, not yet committed
    stalled = HalfSent(a.port, "PUT", "/pending.bin", a.auth(), {}, pending, 14 << 20)
    try:
        time.sleep(2.0)
        before = _pack_objects(cluster, s3_bucket, old_name)
        chunks_before = _rows(cluster, "SELECT count(*) FROM chunks WHERE pack_id = %s", (old_id,))[0][0]
        assert before and chunks_before > 0

        _lose_lock_session_and_seal(cluster, number)
        assert _rows(cluster, "SELECT state FROM packs WHERE id = %s", (old_id,)) == [("sealed",)]

        # The next write goes to a new pack; the pending upload's chunks were given up
        after = os.urandom(300_000)
        assert sa.put(a.url + "/after.bin", data=after).status_code == 201
        assert stalled.finish() == 503
    finally:
        stalled.cut()
    new = _rows(cluster, "SELECT id, name FROM packs WHERE state = 'open' AND node = %s", (number,))
    assert new and all(pid != old_id for pid, _ in new), new
    assert _rows(cluster, "SELECT count(*) FROM chunks WHERE pack_id = %s", (old_id,))[0][0] == chunks_before
    assert _pack_objects(cluster, s3_bucket, old_name) == before  # not a byte more, no whole-pack upload
    assert "lost its catalog lock session" in a.log_path.read_text()

    # a second node sees everything; the retried upload is stored; gc rewrites or
    # drops the old pack while both serve, and check reads every chunk back
    b = cluster.start_node("b")
    sb = b.session()
    assert sb.put(b.url + "/pending.bin", data=pending).status_code == 201
    assert sb.delete(b.url + "/drop.bin").status_code == 204
    assert sa.put(a.url + "/later.bin", data=b"later").status_code == 201
    cluster.cli("history", "set", "--keep-all", "0", "--daily", "0", "--weekly", "0")  # drop.bin's chunks go
    out = cluster.cli("gc", "--grace", "0", "--threshold", "0.99")
    assert "gc:" in out, out
    assert " 1 rewritten" in out, out  # the old pack: keep.bin moved out of it
    assert _rows(cluster, "SELECT count(*) FROM packs WHERE id = %s", (old_id,))[0][0] == 0
    assert _pack_objects(cluster, s3_bucket, old_name) == {}
    cluster.cli("check", "--read-data")  # exit code 0: no problems
    for node, session in ((a, sa), (b, sb)):
        _expect(node, session, {"keep.bin": keep, "after.bin": after, "pending.bin": pending, "later.bin": b"later"})
        assert session.get(node.url + "/drop.bin").status_code == 404
    assert _pack_objects(cluster, s3_bucket, old_name) == {}  # nothing wrote to it again


def _expect(node: Node, session: Any, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        got = session.get(f"{node.url}/{name}")
        assert got.status_code == 200 and got.content == data, (node.url, name, got.status_code)
