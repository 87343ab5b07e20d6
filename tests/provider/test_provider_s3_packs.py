"""``davbackup init/serve --packs s3://…``: a real server whose packs, config and key
slots are objects on a real Ceph RADOS Gateway, the catalog SQLite in --repo.

Driven as a user would: the CLI (init, user add, check, gc), a ``davbackup serve``
subprocess on loopback and HTTP requests.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.server_fixtures import DEFAULT_USERS, DavServer, _env, davbackup, free_port
from tests.services import S3Bucket

MiB = 1024 * 1024


def bucket_keys(bucket: S3Bucket) -> list[str]:
    client = bucket.ceph.client()
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "davbackup", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)


def make_repo(tmp_path: Path, bucket: S3Bucket) -> tuple[Path, dict[str, str]]:
    env = _env(tmp_path)
    repo = tmp_path / "repo"
    out = davbackup(["init", "--repo", str(repo), "--packs", bucket.url("team/one")], env)
    assert f"packs at s3://{bucket.name}/team/one/" in out.stdout
    for name, (password, role) in DEFAULT_USERS.items():
        davbackup(["user", "add", name, "--repo", str(repo), "--role", role], env, stdin=password + "\n")
    return repo, env


def test_init_puts_config_and_keys_in_the_bucket(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    repo, env = make_repo(tmp_path, s3_bucket)
    keys = bucket_keys(s3_bucket)
    assert "team/one/config.json" in keys
    assert [k for k in keys if k.startswith("team/one/keys/") and k.endswith(".json")]
    local = {p.name for p in repo.iterdir()}
    assert "config.json" not in local and "keys" not in local and "packs" not in local
    assert (repo / "packs.url").read_text().strip() == f"s3://{s3_bucket.name}/team/one/"
    # key slots work on the bucket: add one, open with it, list both
    new_pass = tmp_path / "new.pass"
    new_pass.write_text("second passphrase\n")
    davbackup(["key", "add", "--repo", str(repo), "--new-passphrase-file", str(new_pass)], env)
    listed = davbackup(["key", "list", "--repo", str(repo), "--passphrase-file", str(new_pass)], env)
    assert len(listed.stdout.strip().splitlines()) == 2
    # a second init on the same prefix is refused and writes nothing
    again = cli(["init", "--repo", str(tmp_path / "other"), "--packs", s3_bucket.url("team/one")], env)
    assert again.returncode == 2 and "already holds a davbackup repository" in again.stderr
    assert not (tmp_path / "other").exists()
    missing = cli(["init", "--repo", str(tmp_path / "third"), "--packs", "s3://no-such-bucket-x/p"], env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "third").exists()


def test_put_get_through_a_server_on_ceph(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    repo, env = make_repo(tmp_path, s3_bucket)
    server = DavServer(workdir=tmp_path, repo=repo, port=free_port(), users=dict(DEFAULT_USERS),
                       extra_args=["--packs", s3_bucket.url("team/one"), "--packs-cache-mib", "64"])
    server.start()
    try:
        alice = server.session("alice")
        big = os.urandom(70 * MiB)  # a full pack (uploaded whole during the PUT) and a partial one
        assert alice.put(server.url + "/big.bin", data=big).status_code == 201
        small = {f"/s{i}.txt": os.urandom(3000 + i) for i in range(20)}
        for path, body in small.items():
            assert alice.put(server.url + path, data=body).status_code == 201
        got = alice.get(server.url + "/big.bin")
        assert got.status_code == 200 and hashlib.sha256(got.content).digest() == hashlib.sha256(big).digest()
        part = alice.get(server.url + "/big.bin", headers={"Range": "bytes=50000000-50000099"})
        assert part.status_code == 206 and part.content == big[50000000:50000100]
        packs = [k for k in bucket_keys(s3_bucket) if k.startswith("team/one/packs/")]
        assert any(k.endswith(".pack") for k in packs)
        assert any(".seg/" in k for k in packs), "the open pack's commits are segment objects"

        # Acknowledged means in the object store: a SIGKILLed server loses nothing.
        server.kill()
        assert list((repo / "spool").glob("*.spool")), "the crash left the open pack's spool"
        server.start()
        assert not list((repo / "spool").glob("*.spool")), "the next writer removes a dead one's spool"
        alice = server.session("alice")
        for path, body in small.items():
            assert alice.get(server.url + path).content == body
        assert hashlib.sha256(alice.get(server.url + "/big.bin").content).digest() == hashlib.sha256(big).digest()

        # The catalog is local, the data is not: without the cache every read is a ranged GET.
        server.stop()
        server.extra_args = ["--packs", s3_bucket.url("team/one")]
        server.start()
        alice = server.session("alice")
        assert alice.get(server.url + "/s7.txt").content == small["/s7.txt"]
    finally:
        server.stop()
    check = davbackup(["check", "--repo", str(repo), "--read-data"], env)
    assert check.returncode == 0
    davbackup(["gc", "--repo", str(repo)], env)
    wrong = cli(["serve", "--repo", str(repo), "--packs", f"s3://{s3_bucket.name}/elsewhere"], env)
    assert wrong.returncode == 2 and "keeps its packs at" in wrong.stderr


def test_serve_refuses_to_start_without_its_object_store(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    repo, env = make_repo(tmp_path, s3_bucket)
    unreachable = dict(env, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    result = cli(["serve", "--repo", str(repo), "--port", str(free_port())], unreachable)
    assert result.returncode == 22, result.stderr  # StorageUnavailable
    assert "HEAD bucket" in result.stderr and s3_bucket.name in result.stderr
