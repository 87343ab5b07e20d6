#!/usr/bin/env python3
"""davbackup with packs on a Ceph RADOS Gateway (S3) vs the embedded default, one run.

Starts a throwaway Ceph cluster with ``scripts/ceph-throwaway`` (its start time is
reported), then for each repeat two fresh ``davbackup serve`` processes on loopback:
the default (packs in the repository directory) and one made with ``init --packs
s3://bucket/prefix`` (catalog still SQLite in the directory). Both get the same
measurements, alternating which goes first:

1. PUT of ``--size-mib`` of random data, streamed by ``curl -T`` from a file
   generated up front;
2. GET of it with a cold server (restarted first, so nothing of the file is in its
   memory; the S3 server runs without a pack cache unless ``--cache-mib`` is given,
   so every pack byte comes from the gateway);
3. ``--small-files`` PUTs of 4 KiB at concurrency 8 (group commits; on S3 one
   segment PUT per commit batch).

Prints medians and the ratio S3 / default. The gateway runs on the same two cores
as the servers and curl, and writes its bluestore to the same disk, so the ratio is
a lower bound for a real deployment where the store is other machines. Numbers are
a report, never an assertion.
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_server as bs  # noqa: E402  (Server, curl helpers, data files)

ROOT = bs.ROOT
CEPH = ROOT / "scripts" / "ceph-throwaway"
MiB = bs.MiB
MB = bs.MB


def init_repo(repo: Path, extra: list[str]) -> None:
    """``davbackup init`` (plus ``extra``) and one user, unless ``repo`` exists."""
    if repo.exists():
        return
    env = dict(os.environ, DAVBACKUP_PASSPHRASE=bs.PASSPHRASE)
    cli = [str(bs.PYTHON), "-m", "davbackup"]
    subprocess.run([*cli, "init", "--repo", str(repo), *extra], env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=repo.parent)
    subprocess.run([*cli, "user", "add", bs.USER, "--repo", str(repo)], env=env,
                   input=(bs.PASSWORD + "\n").encode(), check=True, stdout=subprocess.DEVNULL, cwd=repo.parent)


class LocalDavbackupServer(bs.DavbackupServer):
    label = "davbackup-local"

    def prepare(self) -> None:
        self.repo = self.workdir / "repo"
        init_repo(self.repo, [])


class S3DavbackupServer(bs.DavbackupServer):
    label = "davbackup-s3"
    packs_url = ""
    cache_mib = 0

    def prepare(self) -> None:
        self.repo = self.workdir / "repo"
        init_repo(self.repo, ["--packs", self.packs_url])

    def command(self) -> list[str]:
        return [*super().command(), "--packs-cache-mib", str(self.cache_mib)]


def start_ceph(base: Path) -> dict:
    out = subprocess.run([str(CEPH), "start", str(base), "--json", "--watch-pid", str(os.getpid())],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"cannot start Ceph: {out.stderr}")
    state = json.loads(out.stdout)
    os.environ.update(AWS_ENDPOINT_URL=state["endpoint"], AWS_ACCESS_KEY_ID=state["access_key"],
                      AWS_SECRET_ACCESS_KEY=state["secret_key"], AWS_REGION=state["region"])
    return state


def make_bucket() -> str:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    name = "bench-" + secrets.token_hex(4)
    client.create_bucket(Bucket=name)
    return name


CEPH_PIDS: list[int] = []


def cpu(pids: list[int]) -> float:
    return sum(sum(bs.cpu_seconds(p)) for p in pids)


def timed(server: bs.DavbackupServer, result: dict[str, float], key: str, run) -> float:
    """Run one measurement; note the CPU seconds the server and the Ceph daemons used."""
    before = cpu([server.pid]), cpu(CEPH_PIDS)
    secs = run()
    result[f"{key}_cpu_server"] = cpu([server.pid]) - before[0]
    result[f"{key}_cpu_ceph"] = cpu(CEPH_PIDS) - before[1]
    return secs


def measure(server: bs.DavbackupServer, data: Path, size: int, small: list[bytes]) -> dict[str, float]:
    result: dict[str, float] = {}
    server.start()
    try:
        name = f"big-{secrets.token_hex(3)}.bin"
        result["put"] = size / timed(server, result, "put", lambda: bs.curl_put(server.url + name, data)) / MB
        server.stop()
        server.start()  # cold: nothing of the file in the server's memory
        result["get"] = size / timed(server, result, "get", lambda: bs.curl_get(server.url + name, size)) / MB
        if small:
            result["small"] = len(small) / timed(server, result, "small",
                                                  lambda: bs.small_puts(server.url, small, 8))
    finally:
        server.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cache-mib", type=int, default=0, help="pack cache of the S3 server (0: off)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-s3-", dir=os.environ.get("TMPDIR")))
    ceph_dir = work / "ceph"
    try:
        t0 = time.monotonic()
        state = start_ceph(ceph_dir)
        CEPH_PIDS.extend(state["pids"].values())
        bs.log(f"Ceph RGW up at {state['endpoint']} in {time.monotonic() - t0:.1f} s")
        bucket = make_bucket()
        size = args.size_mib * MiB
        data = work / "data.bin"
        bs.make_data(data, size)
        small = [os.urandom(4096) for _ in range(args.small_files)]
        samples: dict[str, dict[str, list[float]]] = {"local": {}, "s3": {}}
        for r in range(args.repeat):
            local = LocalDavbackupServer(work / f"local-{r}")
            s3 = S3DavbackupServer(work / f"s3-{r}")
            s3.packs_url = f"s3://{bucket}/run{r}"
            s3.cache_mib = args.cache_mib
            for server in (local, s3):
                server.workdir.mkdir(parents=True)
            order = [("local", local), ("s3", s3)] if r % 2 == 0 else [("s3", s3), ("local", local)]
            for key, server in order:
                bs.log(f"repeat {r + 1}: {key}")
                for metric, value in measure(server, data, size, small).items():
                    samples[key].setdefault(metric, []).append(value)
            shutil.rmtree(local.workdir, ignore_errors=True)
        rows = [("PUT MB/s", "put"), ("GET MB/s (cold)", "get"), ("4 KiB PUTs/s (8 parallel)", "small")]
        print(f"\n{args.size_mib} MiB, {args.small_files} small files, {args.repeat} repeats (medians); "
              f"Ceph RGW started in {state['start_seconds']} s; S3 pack cache {args.cache_mib} MiB\n")
        print("| measurement | embedded default | packs on Ceph RGW | ratio S3/default |")
        print("|---|---|---|---|")
        report = {"ceph_start_seconds": state["start_seconds"], "samples": samples}
        for label, key in rows:
            if key not in samples["local"]:
                continue
            a, b = statistics.median(samples["local"][key]), statistics.median(samples["s3"][key])
            print(f"| {label} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
        print("\nCPU seconds per measurement (medians): davbackup server / Ceph daemons (mon+osd+rgw)\n")
        print("| measurement | embedded default | packs on Ceph RGW |")
        print("|---|---|---|")
        for label, key in rows:
            if f"{key}_cpu_server" not in samples["local"]:
                continue
            cells = []
            for side in ("local", "s3"):
                srv = statistics.median(samples[side][f"{key}_cpu_server"])
                ceph = statistics.median(samples[side][f"{key}_cpu_ceph"])
                cells.append(f"{srv:.1f} / {ceph:.1f}")
            print(f"| {label} | {cells[0]} | {cells[1]} |")
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
    finally:
        subprocess.run([str(CEPH), "stop", str(ceph_dir)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
