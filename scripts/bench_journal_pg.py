#!/usr/bin/env python3
"""What the metadata journal costs a node on PostgreSQL + Ceph RGW (DESIGN.md §20.8).

One node of this build and one of ``--baseline-build DIR`` (a checkout without the
PostgreSQL journal, e.g. a git worktree of the commit before it), each time on a new
repository (own database, own bucket prefix: nothing deduplicates against an earlier
run) on the same throwaway PostgreSQL and Ceph RGW, alternating which goes first: a PUT of
``--size-mib`` of random data (``curl -T``) and ``--small-files`` 4 KiB PUTs at
concurrency 8. Reports medians, the ratio, and per measurement the PostgreSQL
transactions and the objects added to the bucket. A report, never an assertion.

    .venv/bin/python scripts/bench_journal_pg.py --baseline-build /tmp/base --size-mib 1024
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_cluster as bc  # noqa: E402
import bench_s3  # noqa: E402
import bench_server as bs  # noqa: E402

from tests.services import ThrowawayPostgres, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Node(bc.ClusterNode):
    label = "this build"

    def entry(self) -> list[str]:
        return [str(bs.PYTHON), "-m", "davbackup"]


class BaseNode(Node):
    label = "base build"


def init(build: Path, catalog: str, packs: str, workdir: Path) -> None:
    env = dict(os.environ, DAVBACKUP_PASSPHRASE=bs.PASSPHRASE, PYTHONPATH=str(build))
    cli = [str(bs.PYTHON), "-m", "davbackup"]
    where = ["--catalog", catalog, "--packs", packs]
    subprocess.run([*cli, "init", *where], env=env, check=True, stdout=subprocess.DEVNULL, cwd=workdir)
    subprocess.run([*cli, "user", "add", bs.USER, *where], env=env, input=(bs.PASSWORD + "\n").encode(),
                   check=True, stdout=subprocess.DEVNULL, cwd=workdir)


def measure(node: Node, dbname: str, bucket: str, data: Path, small: list[bytes]) -> dict[str, float]:
    result: dict[str, float] = {}
    probe = bc.Probe([node], dbname, bucket)
    url = node.url + f"big-{secrets.token_hex(3)}.bin"
    result["put"] = data.stat().st_size / probe.run(result, "put", lambda: bs.curl_put(url, data)) / bs.MB
    folder = f"small-{secrets.token_hex(3)}/"
    result["small"] = len(small) / probe.run(result, "small", lambda: bc.spread_puts([node.url], small, 8, folder))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-build", required=True, type=Path)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = args.baseline_build.resolve()
    if not (base / "davbackup" / "__init__.py").exists():
        parser.error(f"{base}: not a davbackup checkout")
    Node.extra_env = {"PYTHONPATH": str(ROOT)}
    BaseNode.extra_env = {"PYTHONPATH": str(base)}

    work = Path(tempfile.mkdtemp(prefix="bench-journal-pg-", dir=os.environ.get("TMPDIR")))
    ceph_dir = work / "ceph"
    bc.PG = pg = ThrowawayPostgres(base=Path(tempfile.mkdtemp(prefix="bench-journal-pg-pg-")), port=free_port())
    try:
        pg.start()
        state = bench_s3.start_ceph(ceph_dir)
        bench_s3.CEPH_PIDS.extend(state["pids"].values())
        bucket = bench_s3.make_bucket()
        builds = {"this": ROOT, "base": base}
        size = args.size_mib * bs.MiB
        data = work / "data.bin"
        bs.make_data(data, size)
        small = [os.urandom(4096) for _ in range(args.small_files)]
        samples: dict[str, dict[str, list[float]]] = {}
        for r in range(args.repeat):
            order = [("this", Node), ("base", BaseNode)] if r % 2 == 0 else [("base", BaseNode), ("this", Node)]
            for key, cls in order:
                bs.log(f"repeat {r + 1}: {key}")
                node = cls(work / f"{key}-{r}")
                node.workdir.mkdir(parents=True)
                # a new repository each time: the same data again would be deduplicated
                dbname = pg.create_database()
                node.catalog, node.packs = pg.url(dbname), f"s3://{bucket}/{key}-{r}"
                init(builds[key], node.catalog, node.packs, work)
                node.start()
                try:
                    result = measure(node, dbname, bucket, data, small)
                finally:
                    node.stop()
                for metric, value in result.items():
                    samples.setdefault(key, {}).setdefault(metric, []).append(value)

        def med(side: str, metric: str) -> float:
            return statistics.median(samples[side][metric])

        print(f"\n{args.size_mib} MiB PUT, {args.small_files} × 4 KiB PUTs (8 parallel), one node on PostgreSQL"
              f" + Ceph RGW, {args.repeat} repeats, medians; base build {base}\n")
        print("| measurement | with the journal | base build | ratio |")
        print("|---|---|---|---|")
        for label, metric in ((f"{args.size_mib} MiB PUT, MB/s", "put"), ("4 KiB PUTs/s", "small")):
            a, b = med("this", metric), med("base", metric)
            print(f"| {label} | {a:.1f} | {b:.1f} | {a / b:.2f}× |")
        print("\n| measurement | side | CPU davbackup s | CPU Ceph s | CPU PostgreSQL s | PG transactions | objects |")
        print("|---|---|---|---|---|---|---|")
        for metric in ("put", "small"):
            for side in ("this", "base"):
                cells = [med(side, f"{metric}_{n}") for n in ("cpu_server", "cpu_ceph", "cpu_pg", "pg_commits",
                                                              "objects")]
                print(f"| {metric} | {side} | " + " | ".join(
                    f"{c:.1f}" if i < 3 else f"{c:.0f}" for i, c in enumerate(cells)) + " |")
        print("\nload average at the end: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    finally:
        subprocess.run([str(bench_s3.CEPH), "stop", str(ceph_dir)], capture_output=True)
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
