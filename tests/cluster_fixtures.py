"""Real davbackup nodes sharing one PostgreSQL catalog and one bucket on Ceph RGW.

A repository is created with the CLI exactly as an administrator would
(``davbackup init --catalog URL --packs URL``, ``davbackup user add … --catalog …``);
each node is a ``davbackup serve --catalog URL --packs URL`` subprocess on its own
port of 127.0.0.1 with nothing else in common (every node has its own temporary
local directory). The services come from tests/services.py (``postgres_server``,
``s3_bucket``): nothing is mocked.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.server_fixtures import DEFAULT_USERS, DavServer, _env, davbackup, free_port
from tests.services import S3Bucket, ThrowawayPostgres


@dataclass
class Cluster:
    """Where the shared repository is and how to run the CLI on it."""

    workdir: Path
    catalog: str
    packs: str
    users: dict[str, tuple[str, str]]
    nodes: list["Node"] = field(default_factory=list)
    #: the AWS_* variables of the bucket (else those of the environment, as s3_bucket sets them)
    store_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        # A node without --repo keeps its local state in a temporary directory that it
        # removes when it stops; a SIGKILLed node cannot, so keep those under the test's
        # own directory (pytest prunes it) instead of /tmp.
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {**_env(self.workdir), **self.store_env, "TMPDIR": str(tmp)}

    def args(self) -> list[str]:
        return ["--catalog", self.catalog, "--packs", self.packs]

    def cli(self, *args: str, stdin: str | None = None) -> str:
        return davbackup([*args, *self.args()], self.env, stdin=stdin).stdout

    def start_node(self, name: str, extra_args: list[str] | None = None) -> "Node":
        workdir = self.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        node = Node(workdir=workdir, repo=workdir, port=free_port(), users=self.users,
                    extra_args=list(extra_args or []), cluster=self)
        node.start()
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception:  # noqa: BLE001 - a test may have killed it already
                node.kill()


@dataclass
class Node(DavServer):
    """One ``davbackup serve`` of a cluster: no --repo, only --catalog and --packs."""

    cluster: Cluster | None = None

    def start(self) -> None:
        assert self.cluster is not None
        self.starts += 1
        self.log_path = self.workdir / f"server-{self.starts}.log"
        args = [sys.executable, "-m", "davbackup", "serve", *self.cluster.args(),
                "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args]
        import subprocess

        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=self.workdir)
        self._wait_ready()

    @property
    def env(self) -> dict[str, str]:
        assert self.cluster is not None
        return self.cluster.env


def create_cluster(workdir: Path, postgres: ThrowawayPostgres, bucket: S3Bucket,
                   users: dict[str, tuple[str, str]] | None = None) -> Cluster:
    """A new repository on a fresh database and bucket prefix, with the default users."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(workdir=workdir, catalog=postgres.url(postgres.create_database()),
                      packs=bucket.url("cluster"), users=dict(DEFAULT_USERS if users is None else users),
                      store_env=bucket.ceph.env())
    cluster.cli("init")
    for name, (password, role) in cluster.users.items():
        cluster.cli("user", "add", name, "--role", role, stdin=password + "\n")
    return cluster
