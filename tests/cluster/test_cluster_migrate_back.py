"""`davbackup migrate --to embedded`: a cluster repository (PostgreSQL + Ceph RGW) back
into one directory (issue 11).

A round trip embedded → cluster → embedded gives back the same repository: every
row of every catalog table (IDs and history ``rowid``s included), the same config and
key slots, so the same trees, history, users and passwords; and a repository that
only ever lived on the cluster, with a node killed in the middle of its work (its
open pack left as segments in the bucket), comes back whole, every chunk verified.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.cluster_fixtures import Cluster
from tests.interop_fixtures import remote_tree
from tests.server_fixtures import DavServer, davbackup, free_port, launch
from tests.services import S3Bucket, ThrowawayPostgres

pytestmark = pytest.mark.timeout(600)


def _migrate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "davbackup", "migrate", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _catalog_rows(repo: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of an embedded catalog (with rowid where a table has
    one), sorted; packs all counted as sealed (a migration seals open packs). The
    metadata journal (its tables and meta keys) is left out: it stays with the
    directory it was written in (a migrated repository starts its own)."""
    conn = sqlite3.connect(repo / "catalog.sqlite")
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite%'"
            " AND name NOT LIKE 'journal%' ORDER BY name")]
        rows: dict[str, list[tuple[object, ...]]] = {}
        for table in tables:
            try:
                found = conn.execute(f"SELECT rowid, * FROM {table}").fetchall()
                if table not in ("node_history", "props_history"):  # rowid is an alias or arbitrary
                    found = [r[1:] for r in found]
            except sqlite3.OperationalError:  # WITHOUT ROWID
                found = conn.execute(f"SELECT * FROM {table}").fetchall()
            if table == "packs":
                found = [tuple("sealed" if v == "open" else v for v in r) for r in found]
            if table == "meta":
                found = [r for r in found if not str(r[0]).startswith("journal")]
            rows[table] = sorted(found, key=repr)
        return rows
    finally:
        conn.close()


def _serve(workdir: Path, repo: Path, users: dict[str, tuple[str, str]]) -> DavServer:
    workdir.mkdir(parents=True, exist_ok=True)
    server = DavServer(workdir=workdir, repo=repo, port=free_port(), users=users)
    server.start()
    return server


def test_round_trip_embedded_cluster_embedded_is_identical(
    tmp_path: Path, postgres_server: ThrowawayPostgres, s3_bucket: S3Bucket
) -> None:
    server = launch(tmp_path / "embedded")
    env = server.env
    davbackup(["user", "add", "carol", "--repo", str(server.repo), "--quota", "50M"], env, stdin="carol-pw\n")
    server.users["carol"] = ("carol-pw", "rw")
    users = dict(server.users)
    s = server.session()
    assert s.request("MKCOL", server.url + "/docs").status_code == 201
    first = os.urandom(3 * 1024 * 1024 + 77)  # several chunks
    assert s.put(server.url + "/docs/big.bin", data=first).status_code == 201

    def tag(value: str) -> int:
        return s.request("PROPPATCH", server.url + "/docs/big.bin", data=(
            '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:t"><D:set><D:prop>'
            f"<Z:tag>{value}</Z:tag></D:prop></D:set></D:propertyupdate>"),
            headers={"Content-Type": "application/xml"}).status_code

    assert tag("first-tag") == 207
    moment = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    time.sleep(1.1)
    assert s.put(server.url + "/docs/big.bin", data=b"second version").status_code == 204
    assert tag("second-tag") == 207
    assert s.put(server.url + "/docs/gone.txt", data=b"deleted later").status_code == 201
    assert s.delete(server.url + "/docs/gone.txt").status_code == 204
    assert server.session("bob").put(server.url + "/bob.txt", data=b"bob's").status_code == 201
    assert server.session("carol").put(server.url + "/carol.bin", data=os.urandom(100_000)).status_code == 201
    half = s.put(server.url + "/docs/unfinished.bin", data=b"x" * 300_000,
                 headers={"Content-Range": "bytes 0-299999/1000000"})
    assert half.status_code == 308  # an upload session and its chunks come along too
    trees = {user: remote_tree(server, "/", user) for user in ("alice", "bob", "carol")}
    server.stop()
    original = _catalog_rows(server.repo)
    assert original["node_history"] and original["props_history"] and original["upload_sessions"]

    catalog = postgres_server.url(postgres_server.create_database())
    packs = s3_bucket.url("round-trip")
    there = _migrate(env, "--repo", str(server.repo), "--catalog", catalog, "--packs", packs)
    assert there.returncode == 0, there.stderr
    back_dir = tmp_path / "back"
    back = _migrate(env, "--to", "embedded", "--repo", str(back_dir), "--catalog", catalog, "--packs", packs)
    assert back.returncode == 0, back.stderr
    assert "chunks verified" in back.stdout and f"--repo {back_dir}" in back.stdout, back.stdout

    assert _catalog_rows(back_dir) == original
    assert (back_dir / "config.json").read_bytes() == (server.repo / "config.json").read_bytes()
    keys = sorted(p.name for p in (server.repo / "keys").iterdir())
    assert sorted(p.name for p in (back_dir / "keys").iterdir()) == keys
    for name in keys:
        assert (back_dir / "keys" / name).read_bytes() == (server.repo / "keys" / name).read_bytes()
    data_packs = sorted(f"{row[1]}.pack" for row in original["packs"])  # (id, name, state, created)
    assert sorted(p.name for p in (back_dir / "packs").rglob("*.pack")) == data_packs
    davbackup(["check", "--read-data", "--repo", str(back_dir)], env)

    served = _serve(tmp_path / "served", back_dir, users)
    try:
        for user in ("alice", "bob", "carol"):  # every password logs in, every tree is the same
            assert remote_tree(served, "/", user) == trees[user], user
        sb = served.session()
        assert sb.get(served.url + f"/.history/{moment}/docs/big.bin").content == first
        assert "first-tag" in sb.request("PROPFIND", served.url + f"/.history/{moment}/docs/big.bin",
                                    headers={"Depth": "0"}).text
        wrong = served.session()
        wrong.auth = ("alice", "not her password")
        assert wrong.get(served.url + "/docs/big.bin").status_code == 401
        ask = sb.put(served.url + "/docs/unfinished.bin", data=b"", headers={"Content-Range": "bytes */1000000"})
        assert ask.status_code == 308 and ask.headers["Upload-Offset"] == "300000"
        assert sb.put(served.url + "/docs/new.bin", data=first).status_code == 201  # new IDs do not collide
        assert sb.get(served.url + "/docs/new.bin").content == first
    finally:
        served.stop()
    # serving it wrote a journal checkpoint: the directory's packs alone are a backup again
    conn = sqlite3.connect(back_dir / "catalog.sqlite")
    try:
        assert conn.execute("SELECT count(*) FROM journal_packs WHERE kind='checkpoint'").fetchone()[0] >= 1
    finally:
        conn.close()


def test_migrate_back_a_cluster_repository_after_a_node_was_killed(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.start_node("a"), cluster.start_node("b")
    sa, sb = a.session(), b.session()
    written: dict[str, bytes] = {}
    for i in range(6):  # small files: a's open pack lives as segments in the bucket
        written[f"/small-{i}.txt"] = os.urandom(5000 + i)
        assert sa.put(a.url + f"/small-{i}.txt", data=written[f"/small-{i}.txt"]).status_code == 201
    written["/large.bin"] = os.urandom(5 * 1024 * 1024)
    assert sb.put(b.url + "/large.bin", data=written["/large.bin"]).status_code == 201
    a.kill()  # no seal, no cleanup
    with psycopg.connect(cluster.catalog) as conn:
        open_packs = [r[0] for r in conn.execute("SELECT name FROM packs WHERE state='open'")]
    assert open_packs  # a's (and b's) open pack: appended segment by segment, never one object
    target = tmp_path / "embedded"
    args = ["--to", "embedded", "--repo", str(target), *cluster.args()]
    busy = _migrate(cluster.env, *args)  # b still serves
    assert busy.returncode == 6 and "stop every node" in busy.stderr, busy.stderr
    assert not target.exists()
    b.stop()
    target.mkdir()
    (target / "something").write_text("not empty")
    occupied = _migrate(cluster.env, *args)
    assert occupied.returncode == 2 and "not an empty directory" in occupied.stderr, occupied.stderr
    (target / "something").unlink()
    with psycopg.connect(cluster.catalog, autocommit=True) as holder:  # what a running gc holds
        from davbackup.catalog_pg import NAMED_CLASS, _named_key

        holder.execute("SELECT pg_advisory_lock(%s, %s)", (NAMED_CLASS, _named_key("gc")))
        during_gc = _migrate(cluster.env, *args)
    assert during_gc.returncode == 6 and "another gc is running" in during_gc.stderr, during_gc.stderr
    assert list(target.iterdir()) == []
    done = _migrate(cluster.env, *args)
    assert done.returncode == 0, done.stderr
    davbackup(["check", "--read-data", "--repo", str(target)], cluster.env)
    for name in open_packs:
        assert (target / "packs" / name[:2] / f"{name}.pack").stat().st_size > 8
    served = _serve(tmp_path / "served", target, cluster.users)
    try:
        s = served.session()
        for name, body in written.items():
            assert s.get(served.url + name).content == body, name
    finally:
        served.stop()
    # the cluster is unchanged and still serves
    b.start()
    assert b.session().get(b.url + "/small-0.txt").content == written["/small-0.txt"]
