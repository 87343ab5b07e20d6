#!/usr/bin/env python3
"""davbackup on PostgreSQL + Ceph RGW (one and two nodes) vs the embedded default, one run.

Starts a throwaway PostgreSQL (tests/services.py) and a throwaway Ceph cluster
(``scripts/ceph-throwaway``), creates one repository with ``davbackup init --catalog
URL --packs s3://…`` and measures, for each repeat:

1. **1 node vs embedded**: the default server (SQLite + directory) and one node on
   PostgreSQL + Ceph, alternating which goes first: PUT of ``--size-mib`` of random
   data (``curl -T``), GET of it from a restarted server (no pack cache: every byte
   comes from the gateway), ``--small-files`` 4 KiB PUTs at concurrency 8;
2. **2 nodes vs 1 node** (both on PostgreSQL + Ceph) with ``--clients`` parallel
   clients spread round-robin over the nodes: the same number of 4 KiB PUTs, and
   ``--clients`` PUTs of ``--part-mib`` each.

3. **the store itself** (raw boto3, same gateway, same run): a managed upload of the
   same file (``upload_file``: multipart, parallel parts) and a download of it
   (``download_fileobj``: parallel ranged GETs), so the node's figures can be read
   as a share of what the object store delivers on this machine, whatever the
   embedded server reaches.

With ``--baseline-build DIR`` (a checkout of another commit, e.g. a ``git worktree``
of main, run with this interpreter and libraries) step 1 also measures a node of
that build, on the same PostgreSQL and Ceph, in the same rotation.

Every measurement uploads content of its own (new random bytes each repeat and each
step): the cluster's repository lives through all repeats, and content it already
holds would only be deduplicated, not stored. The embedded server gets a new
repository each repeat and the same bytes as the node in that repeat.

Where time goes: CPU seconds of the davbackup servers, the Ceph daemons and the
PostgreSQL processes during each measurement, the PostgreSQL commits it caused
(``pg_stat_database.xact_commit``) and the objects it left in the bucket. Everything
runs on this machine's cores and disk, so ratios are lower bounds for a deployment
where PostgreSQL and the object store are other machines. Numbers are a report,
never an assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_s3  # noqa: E402
import bench_server as bs  # noqa: E402
import requests  # noqa: E402

from tests.services import ThrowawayPostgres, free_port  # noqa: E402

MiB, MB = bs.MiB, bs.MB
PG: ThrowawayPostgres | None = None


class ClusterNode(bs.DavbackupServer):
    """``davbackup serve --catalog URL --packs URL`` (the repository exists already)."""

    label = "davbackup-node"
    catalog = ""
    packs = ""

    def prepare(self) -> None:
        pass

    def command(self) -> list[str]:
        return [*self.entry(), "serve", "--catalog", self.catalog, "--packs", self.packs, "--port", "0"]


class BaseClusterNode(ClusterNode):
    """A node of ``--baseline-build`` (its ``PYTHONPATH`` is set in main)."""

    label = "base-node"

    def entry(self) -> list[str]:
        return [str(bs.PYTHON), "-m", "davbackup"]


def raw_store(bucket: str, data: Path, size: int, result: dict[str, float]) -> None:
    """boto3's managed transfers of ``data`` to and from the gateway: the store's own pace."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))
    key = f"raw/{secrets.token_hex(6)}"

    class Sink:
        def write(self, piece: bytes) -> int:
            return len(piece)

    for step, run in (("put", lambda: client.upload_file(str(data), bucket, key)),
                      ("get", lambda: client.download_fileobj(bucket, key, Sink()))):
        ceph, own = bench_s3.cpu(bench_s3.CEPH_PIDS), time.process_time()
        t0 = time.perf_counter()
        run()
        secs = time.perf_counter() - t0
        result[step] = size / secs / MB
        result[f"{step}_cpu_ceph"] = bench_s3.cpu(bench_s3.CEPH_PIDS) - ceph
        result[f"{step}_cpu_server"] = time.process_time() - own  # the client's CPU, in the server column
    client.delete_object(Bucket=bucket, Key=key)


def init_cluster(catalog: str, packs: str, workdir: Path) -> None:
    env = dict(os.environ, DAVBACKUP_PASSPHRASE=bs.PASSPHRASE)
    cli = [str(bs.PYTHON), "-m", "davbackup"]
    where = ["--catalog", catalog, "--packs", packs]
    subprocess.run([*cli, "init", *where], env=env, check=True, stdout=subprocess.DEVNULL, cwd=workdir)
    subprocess.run([*cli, "user", "add", bs.USER, *where], env=env, input=(bs.PASSWORD + "\n").encode(),
                   check=True, stdout=subprocess.DEVNULL, cwd=workdir)


def pg_pids() -> list[int]:
    assert PG is not None
    try:
        main = int((PG.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return []
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(main)], capture_output=True, text=True).stdout
    return [main, *(int(p) for p in out.split())]


def commits(dbname: str) -> int:
    import psycopg

    assert PG is not None
    with psycopg.connect(PG.url(), autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname=%s", (dbname,)).fetchone()
    return int(row[0]) if row else 0


def object_count(bucket: str) -> int:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    return sum(page.get("KeyCount", 0) for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket))


class Probe:
    """CPU seconds (servers, Ceph, PostgreSQL), PostgreSQL commits and objects over one measurement."""

    def __init__(self, servers: list[bs.Server], dbname: str | None, bucket: str | None) -> None:
        self.servers, self.dbname, self.bucket = servers, dbname, bucket

    def snapshot(self) -> dict[str, float]:
        snap = {
            "cpu_server": bench_s3.cpu([s.pid for s in self.servers]),
            "cpu_ceph": bench_s3.cpu(bench_s3.CEPH_PIDS),
            "cpu_pg": bench_s3.cpu(pg_pids()),
        }
        if self.dbname:
            snap["pg_commits"] = commits(self.dbname)
        if self.bucket:
            snap["objects"] = object_count(self.bucket)
        return snap

    def run(self, result: dict[str, float], key: str, fn) -> float:  # type: ignore[no-untyped-def]
        before = self.snapshot()
        secs = fn()
        after = self.snapshot()
        for name, value in after.items():
            result[f"{key}_{name}"] = value - before[name]
        return secs


def spread_puts(urls: list[str], bodies: list[bytes], concurrency: int, folder: str) -> float:
    """PUT every body once, ``concurrency`` keep-alive clients, client i on node i mod N."""
    for url in urls[:1]:
        r = requests.request("MKCOL", url + folder, auth=(bs.USER, bs.PASSWORD), timeout=60)
        if r.status_code not in (201, 405):
            raise RuntimeError(f"MKCOL {folder}: {r.status_code}")
    lock = threading.Lock()
    todo = iter(range(len(bodies)))
    errors: list[str] = []
    start = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        base = urls[index % len(urls)] + folder
        session = requests.Session()
        session.auth = (bs.USER, bs.PASSWORD)
        start.wait()
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                break
            resp = session.put(f"{base}f{i:05d}.bin", data=bodies[i], timeout=300)
            if resp.status_code not in (201, 204):
                errors.append(f"f{i:05d}: {resp.status_code}")
                break
        session.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"PUTs failed: {errors[:5]}")
    return secs


def fresh_small(count: int) -> list[bytes]:
    return [os.urandom(4096) for _ in range(count)]


def one_node_vs_embedded(work: Path, r: int, catalog: str, packs: str, dbname: str, bucket: str,
                         data: Path, size: int, small_files: int, base_data: Path | None) -> dict[str, dict[str, float]]:
    """``data`` (and ``base_data`` for a baseline-build node): content new to the
    cluster's repository (see the module doc); each side PUTs small files of its own."""
    local = bench_s3.LocalDavbackupServer(work / f"local-{r}")
    node = ClusterNode(work / f"node-{r}")
    sides: list[tuple[str, bs.DavbackupServer, Path]] = [("embedded", local, data), ("cluster1", node, data)]
    if base_data is not None:
        sides.append(("cluster1-base", BaseClusterNode(work / f"base-node-{r}"), base_data))
    for _key, s, _data in sides:
        s.workdir.mkdir(parents=True, exist_ok=True)
        if isinstance(s, ClusterNode):
            s.catalog, s.packs = catalog, packs
    out: dict[str, dict[str, float]] = {}
    order = sides[r % len(sides):] + sides[:r % len(sides)]
    if r % 2 == 1:
        order.reverse()
    for key, server, data in order:
        bs.log(f"repeat {r + 1}: {key}")
        is_node = isinstance(server, ClusterNode)
        small = fresh_small(small_files)
        result: dict[str, float] = {}
        server.start()
        try:
            probe = Probe([server], dbname if is_node else None, bucket if is_node else None)
            name = f"big-{secrets.token_hex(3)}.bin"
            result["put"] = size / probe.run(result, "put", lambda: bs.curl_put(server.url + name, data)) / MB
            server.stop()
            server.start()
            probe = Probe([server], dbname if is_node else None, bucket if is_node else None)
            result["get"] = size / probe.run(result, "get", lambda: bs.curl_get(server.url + name, size)) / MB
            folder = f"small-{secrets.token_hex(3)}/"
            result["small"] = len(small) / probe.run(
                result, "small", lambda: spread_puts([server.url], small, 8, folder))
        finally:
            server.stop()
        out[key] = result
    shutil.rmtree(local.workdir, ignore_errors=True)
    return out


def nodes_scaling(work: Path, r: int, catalog: str, packs: str, dbname: str, bucket: str,
                  small_files: int, clients: int, part_size: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    order = [1, 2] if r % 2 == 0 else [2, 1]
    for count in order:
        key = f"nodes{count}"
        bs.log(f"repeat {r + 1}: {count} node(s), {clients} clients")
        nodes = []
        for i in range(count):
            n = ClusterNode(work / f"scale-{r}-{count}-{i}")
            n.workdir.mkdir(parents=True, exist_ok=True)
            n.catalog, n.packs = catalog, packs
            nodes.append(n)
        result: dict[str, float] = {}
        try:
            for n in nodes:
                n.start()
            urls = [n.url for n in nodes]
            probe = Probe(list(nodes), dbname, bucket)
            folder = f"s{count}-{secrets.token_hex(3)}/"
            small = fresh_small(small_files)
            result["small"] = len(small) / probe.run(result, "small", lambda: spread_puts(urls, small, clients, folder))
            bodies = [os.urandom(part_size) for _ in range(clients)]
            folder = f"b{count}-{secrets.token_hex(3)}/"
            secs = probe.run(result, "large", lambda: spread_puts(urls, bodies, clients, folder))
            result["large"] = len(bodies) * part_size / secs / MB
        finally:
            for n in nodes:
                n.stop()
        out[key] = result
    return out


def med(samples: dict[str, dict[str, list[float]]], side: str, key: str) -> float | None:
    values = samples.get(side, {}).get(key)
    return statistics.median(values) if values else None


def main() -> int:
    global PG
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--part-mib", type=int, default=16, help="size of each client's large PUT (2 nodes vs 1)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-embedded", action="store_true", help="only the 2 nodes vs 1 comparison")
    parser.add_argument("--baseline-build", type=Path,
                        help="also measure a node of this checkout (e.g. a git worktree of main) in step 1")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=os.environ.get("TMPDIR")))
    ceph_dir = work / "ceph"
    # its own temp dir: the postgres user must reach it (work is private to us)
    PG = ThrowawayPostgres(base=Path(tempfile.mkdtemp(prefix="bench-cluster-pg-")), port=free_port())
    try:
        t0 = time.monotonic()
        PG.start()
        bs.log(f"PostgreSQL up in {PG.started_in:.1f} s")
        state = bench_s3.start_ceph(ceph_dir)
        bench_s3.CEPH_PIDS.extend(state["pids"].values())
        bs.log(f"Ceph RGW up at {state['endpoint']} ({time.monotonic() - t0:.1f} s for both)")
        bucket = bench_s3.make_bucket()
        dbname = PG.create_database()
        catalog, packs = PG.url(dbname), f"s3://{bucket}/cluster"
        init_cluster(catalog, packs, work)
        size = args.size_mib * MiB
        base_data = None
        if args.baseline_build:
            BaseClusterNode.extra_env = {"PYTHONPATH": str(args.baseline_build.resolve())}
            base_data = work / "data-base.bin"
        data = work / "data.bin"
        samples: dict[str, dict[str, list[float]]] = {}
        loads: list[float] = []
        for r in range(args.repeat):
            for f in (data, base_data):
                if f is not None:
                    f.unlink(missing_ok=True)
                    bs.make_data(f, size)  # new random bytes each repeat
            loads.append(os.getloadavg()[0])
            results = {} if args.skip_embedded else one_node_vs_embedded(
                work, r, catalog, packs, dbname, bucket, data, size, args.small_files, base_data)
            if not args.skip_embedded:
                bs.log(f"repeat {r + 1}: raw boto3 transfers")
                results["raw"] = {}
                raw_store(bucket, data, size, results["raw"])
            results.update(nodes_scaling(work, r, catalog, packs, dbname, bucket, args.small_files, args.clients,
                                         args.part_mib * MiB))
            loads.append(os.getloadavg()[0])
            for side, metrics in results.items():
                for metric, value in metrics.items():
                    samples.setdefault(side, {}).setdefault(metric, []).append(value)
        print(f"\n{args.size_mib} MiB PUT/GET, {args.small_files} × 4 KiB, {args.clients} clients × "
              f"{args.part_mib} MiB, {args.repeat} repeat(s), medians; PostgreSQL started in {PG.started_in:.1f} s, "
              f"Ceph RGW in {state['start_seconds']} s; load average (1 min) {min(loads):.1f}–{max(loads):.1f}\n")
        if not args.skip_embedded:
            base = bool(args.baseline_build)
            print("| 1 node | embedded default | PostgreSQL + Ceph RGW | ratio | boto3 on the same RGW | node / boto3 |"
                  + (" base-build node | this / base |" if base else ""))
            print("|---|---|---|---|---|---|" + ("---|---|" if base else ""))
            for label, key in (("PUT MB/s", "put"), ("GET MB/s (cold, no cache)", "get"),
                               ("4 KiB PUTs/s (8 parallel)", "small")):
                a, b = med(samples, "embedded", key), med(samples, "cluster1", key)
                if not (a and b):
                    continue
                raw = med(samples, "raw", key)
                cells = [f"{raw:.0f}", f"{b / raw:.2f}"] if raw else ["–", "–"]
                if base:
                    c = med(samples, "cluster1-base", key)
                    cells += [f"{c:.0f}", f"{b / c:.2f}"] if c else ["–", "–"]
                print(f"| {label} | {a:.0f} | {b:.0f} | {b / a:.2f} | " + " | ".join(cells) + " |")
            print("\nPer repeat (MB/s; files/s for small), repeat by repeat: "
                  + "; ".join(f"{side} {key} " + "/".join(f"{v:.0f}" for v in samples.get(side, {}).get(key, []))
                              for side in ("embedded", "cluster1", "cluster1-base", "raw")
                              for key in ("put", "get", "small") if samples.get(side, {}).get(key)))
        print(f"\n| {args.clients} clients | 1 node | 2 nodes | ratio |")
        print("|---|---|---|---|")
        for label, key in (("4 KiB PUTs/s", "small"), (f"{args.part_mib} MiB PUTs, MB/s", "large")):
            a, b = med(samples, "nodes1", key), med(samples, "nodes2", key)
            if a and b:
                print(f"| {label} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
        print("\nWhere time goes (medians per measurement): CPU s of davbackup / Ceph / PostgreSQL, "
              "PostgreSQL transactions (reads included), change in the number of objects in the bucket\n")
        print("| measurement | side | CPU davbackup (raw: boto3) | CPU Ceph | CPU PostgreSQL | PG transactions |"
              " objects (net) |")
        print("|---|---|---|---|---|---|---|")
        for side in ("embedded", "cluster1", "cluster1-base", "raw", "nodes1", "nodes2"):
            for key in ("put", "get", "small", "large"):
                cpu_s = med(samples, side, f"{key}_cpu_server")
                if cpu_s is None:
                    continue
                cells = [med(samples, side, f"{key}_{n}") for n in ("cpu_ceph", "cpu_pg", "pg_commits", "objects")]
                shown = [f"{c:.1f}" if c is not None and i < 2 else (f"{c:.0f}" if c is not None else "–")
                         for i, c in enumerate(cells)]
                print(f"| {key} | {side} | {cpu_s:.1f} | " + " | ".join(shown) + " |")
        if args.json:
            args.json.write_text(json.dumps({"samples": samples}, indent=1))
    finally:
        subprocess.run([str(bench_s3.CEPH), "stop", str(ceph_dir)], capture_output=True)
        PG.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
