"""Real throwaway services on loopback for the scale-out tests: PostgreSQL and Ceph RGW.

``tests/conftest.py`` registers this module as a plugin, so the fixtures below are
available to every test and each session fixture exists once per test run (a module
that imported them by name would get instances of its own); a service starts only
when a test asks for it.

* ``postgres_server`` (session): Debian's PostgreSQL 15, ``initdb`` into a temp dir
  and ``pg_ctl start`` as the ``postgres`` user (the server refuses to run as root),
  listening on a Unix socket in that dir and on a free loopback port. A watchdog
  (``tests/pg_watchdog.py``) stops it and removes the dir if the test run is killed.
* ``ceph_rgw`` (session): one monitor, one bluestore OSD on a sparse file and one
  radosgw, started by ``scripts/ceph-throwaway`` (the benchmarks use the same script).
* ``s3_bucket`` (function): a fresh bucket on ``ceph_rgw``, emptied and removed after
  the test, with the ``AWS_*`` variables a client needs.

A service that cannot start makes the tests that need it *fail* with the reason and
the end of its log, never skip: a missing package is a broken test machine
(``scripts/test`` installs them).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CEPH_SCRIPT = ROOT / "scripts" / "ceph-throwaway"
PG_WATCHDOG = Path(__file__).resolve().with_name("pg_watchdog.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- PostgreSQL ---------------------------------------------------------------------


def _pg_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps it off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; scripts/test does it)")


def _pg_run_as() -> list[str]:
    """The prefix that runs a PostgreSQL program as a non-root user (it refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("no 'postgres' system user (apt-get install postgresql)") from exc
    return ["runuser", "-u", "postgres", "--"]


def _start_ticks(pid: int) -> int:
    """A process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster in a temp dir, run by a non-root user.

    :meth:`start` first starts a watchdog (``tests/pg_watchdog.py``, its own session)
    that stops the server and removes ``base`` once this process is gone, however it
    ended: a killed test run leaves no server and no data directory behind.
    """

    base: Path
    port: int
    user: str = "postgres"  # the database superuser created by initdb
    dbname: str = "postgres"
    started_in: float = 0.0
    _as: list[str] = field(default_factory=list)
    _watchdog: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url(self, dbname: str | None = None) -> str:
        """A libpq URL over the loopback port (what ``--catalog`` takes)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname or self.dbname}"

    def conninfo(self, dbname: str | None = None) -> str:
        """A libpq keyword string over the Unix socket."""
        return f"host={self.socket_dir} port={self.port} user={self.user} dbname={dbname or self.dbname}"

    def _run(self, args: list[str], timeout: float = 60) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"--- server log\n{_tail(self.log)}"
            )

    def start(self) -> None:
        t0 = time.monotonic()
        bindir = _pg_bindir()
        self._as = _pg_run_as()
        if self._as:  # postgres refuses root: run it as the package's user
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
        self._start_watchdog(bindir)
        self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                   "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.socket_dir} -c fsync=on"
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                   "-w", "-t", "60", "start"])
        self.started_in = time.monotonic() - t0

    def _start_watchdog(self, bindir: Path) -> None:
        """Before ``initdb``: a process killed while the server starts leaves nothing either."""
        me = os.getpid()
        self._watchdog = subprocess.Popen(
            [sys.executable, str(PG_WATCHDOG), str(me), str(_start_ticks(me)), str(self.base),
             str(bindir / "pg_ctl"), *self._as],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the process group a timeout kills
        )

    def halt(self) -> None:
        """Stop the server but keep its data (an outage); :meth:`resume` starts it again."""
        self._run([str(_pg_bindir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def resume(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.socket_dir} -c fsync=on"
        self._run([str(_pg_bindir() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                   "-w", "-t", "60", "start"])

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run([str(_pg_bindir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
            except RuntimeError:
                pass  # already stopped
        shutil.rmtree(self.base, ignore_errors=True)
        if self._watchdog is not None:  # it sees the directory gone within a second
            try:
                self._watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # it ends on its own
            self._watchdog = None

    def create_database(self) -> str:
        """A fresh, empty database; returns its name."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    base = Path(tempfile.mkdtemp(prefix="davbackup-pg-"))
    server = ThrowawayPostgres(base=base, port=free_port())
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        server.stop()
        pytest.fail(f"cannot start the throwaway PostgreSQL: {exc}", pytrace=False)
    yield server
    server.stop()


# --- Ceph RADOS Gateway ---------------------------------------------------------------


@dataclass(frozen=True)
class ThrowawayCeph:
    """A running throwaway Ceph cluster with radosgw (see ``scripts/ceph-throwaway``)."""

    dir: Path
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    started_in: float

    def env(self) -> dict[str, str]:
        """The variables boto3 (and ``davbackup --packs s3://…``) read."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def stop_gateway(self) -> None:
        """Kill radosgw only: the S3 service is down, the cluster keeps its data."""
        _ceph_command("rgw-stop", self.dir)

    def start_gateway(self) -> None:
        """Start radosgw again on the same port; returns once it answers."""
        _ceph_command("rgw-start", self.dir)

    def client(self):  # -> botocore S3 client
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        )


def _ceph_command(verb: str, base: Path) -> None:
    result = subprocess.run([str(CEPH_SCRIPT), verb, str(base)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/ceph-throwaway {verb} failed: {result.stderr}")


def start_ceph(base: Path) -> ThrowawayCeph:
    """Start a cluster under ``base`` (stopped by :func:`stop_ceph` or when we exit)."""
    result = subprocess.run(
        [str(CEPH_SCRIPT), "start", str(base), "--json", "--watch-pid", str(os.getpid())],
        capture_output=True, text=True, timeout=180,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/ceph-throwaway start failed ({result.returncode}):\n{result.stderr}")
    state = json.loads(result.stdout)
    return ThrowawayCeph(
        dir=base,
        endpoint=state["endpoint"],
        access_key=state["access_key"],
        secret_key=state["secret_key"],
        region=state["region"],
        started_in=float(state["start_seconds"]),
    )


def stop_ceph(base: Path) -> None:
    subprocess.run([str(CEPH_SCRIPT), "stop", str(base)], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def ceph_rgw() -> Iterator[ThrowawayCeph]:
    # Two attempts: the cluster's ports are a random range that was free when picked,
    # and another process on the machine may take one of them before Ceph binds it
    # (seen with several test runs at once: radosgw's port answered by someone else).
    for attempt in (1, 2):
        base = Path(tempfile.mkdtemp(prefix="davbackup-ceph-"))
        try:
            ceph = start_ceph(base)
            break
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
            stop_ceph(base)
            shutil.rmtree(base, ignore_errors=True)
            if attempt == 2:
                pytest.fail(f"cannot start the throwaway Ceph RADOS Gateway: {exc}", pytrace=False)
    yield ceph
    stop_ceph(base)


@dataclass(frozen=True)
class S3Bucket:
    ceph: ThrowawayCeph
    name: str

    def url(self, prefix: str = "repo") -> str:
        return f"s3://{self.name}/{prefix}"


def empty_bucket(client, name: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])


@pytest.fixture
def s3_bucket(ceph_rgw: ThrowawayCeph, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A new bucket for one test; the ``AWS_*`` variables point at the gateway meanwhile."""
    for key, value in ceph_rgw.env().items():
        monkeypatch.setenv(key, value)
    client = ceph_rgw.client()
    name = "test-" + secrets.token_hex(6)
    client.create_bucket(Bucket=name)
    yield S3Bucket(ceph_rgw, name)
    empty_bucket(client, name)
    client.delete_bucket(Bucket=name)
