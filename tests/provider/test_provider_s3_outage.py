"""A server whose object store goes away and comes back (its radosgw is killed and
restarted; the monitor and OSD keep running).

While the store is down, a write that needs it is answered 503 with Retry-After and
stores nothing; what the server can still serve (packs it holds in its spool or
cache) it serves. When the store is back the server recovers by itself, and nothing
that was acknowledged is lost, also across a SIGKILL of the server.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.server_fixtures import DEFAULT_USERS, DavServer, _env, davbackup, free_port
from tests.services import S3Bucket

MiB = 1024 * 1024


def test_store_outage_answers_503_and_recovers(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    env = _env(tmp_path)
    repo = tmp_path / "repo"
    davbackup(["init", "--repo", str(repo), "--packs", s3_bucket.url("outage")], env)
    davbackup(["user", "add", "alice", "--repo", str(repo)], env, stdin="alice-password\n")
    config = tmp_path / "davbackup.yaml"  # the pack cache set in the config file
    config.write_text(f"packs:\n  url: {s3_bucket.url('outage')}\n  cache_mib: 256\n")
    server = DavServer(workdir=tmp_path, repo=repo, port=free_port(), users=dict(DEFAULT_USERS), config=config)
    server.start()
    ceph = s3_bucket.ceph
    try:
        alice = server.session("alice")
        before = {f"/before{i}.bin": os.urandom(200_000 + i) for i in range(3)}
        for path, body in before.items():
            assert alice.put(server.url + path, data=body).status_code == 201

        ceph.stop_gateway()
        try:
            refused = alice.put(server.url + "/during.bin", data=os.urandom(300_000))
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["Retry-After"]) > 0
            assert alice.get(server.url + "/during.bin").status_code == 404  # nothing stored
            for path, body in before.items():  # the open pack is still in the spool
                got = alice.get(server.url + path)
                assert got.status_code == 200 and got.content == body
        finally:
            ceph.start_gateway()

        after = os.urandom(5 * MiB)
        assert alice.put(server.url + "/after.bin", data=after).status_code == 201
        server.restart(crash=True)
        alice = server.session("alice")
        for path, body in [*before.items(), ("/after.bin", after)]:
            assert alice.get(server.url + path).content == body
        assert alice.get(server.url + "/during.bin").status_code == 404
    finally:
        server.stop()
    davbackup(["check", "--repo", str(repo), "--read-data"], env)
