#!/usr/bin/env python3
"""`davbackup migrate` both ways (embedded → PostgreSQL + Ceph RGW → embedded), one run.

Starts a throwaway PostgreSQL and Ceph RGW (as ``scripts/bench-cluster`` does), fills
an embedded repository through a real server (one file of ``--size-mib`` random
bytes by ``curl -T``, ``--small-files`` 4 KiB files), then per repeat times:

* ``migrate`` (to the cluster) and ``migrate --to embedded`` (back), each a CLI
  process from start to exit (every chunk is verified both ways);
* baselines for the same bytes: uploading the repository's pack files to the
  bucket with boto3 (one ``upload_file`` each, the transfer manager's defaults) and
  downloading them again, and ``cp -a`` of the repository directory.

Reports seconds, MB/s of pack bytes and the ratio to the baselines. Everything runs
on this machine's cores and disk (the gateway writes its bluestore to the same disk):
a report, never an assertion.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_s3  # noqa: E402
import bench_server as bs  # noqa: E402

from tests.services import ThrowawayPostgres, free_port  # noqa: E402

MiB, MB = bs.MiB, bs.MB


PROFILE: Path | None = None  # --profile DIR: each migrate under cProfile, DIR/<n>.prof


def timed_cli(args: list[str]) -> float:
    env = dict(os.environ, DAVBACKUP_PASSPHRASE=bs.PASSPHRASE)
    profile: list[str] = []
    if PROFILE is not None:
        profile = ["-m", "cProfile", "-o", str(PROFILE / f"{len(list(PROFILE.iterdir()))}.prof")]
    t0 = time.monotonic()
    subprocess.run([str(bs.PYTHON), *profile, "-m", "davbackup", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def s3_client():  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(s3={"addressing_style": "path"}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", type=Path, help="run each migrate under cProfile, profiles into this dir")
    args = parser.parse_args()
    global PROFILE
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE = args.profile

    work = Path(tempfile.mkdtemp(prefix="bench-migrate-", dir=os.environ.get("TMPDIR")))
    pg = ThrowawayPostgres(base=Path(tempfile.mkdtemp(prefix="bench-migrate-pg-")), port=free_port())
    try:
        pg.start()
        state = bench_s3.start_ceph(work / "ceph")
        bucket = bench_s3.make_bucket()
        server = bench_s3.LocalDavbackupServer(work / "source")
        server.workdir.mkdir(parents=True)
        data = work / "data.bin"
        bs.make_data(data, args.size_mib * MiB)
        server.start()
        try:
            bs.curl_put(server.url + "big.bin", data)
            bs.small_puts(server.url, [os.urandom(4096) for _ in range(args.small_files)], 8)
        finally:
            server.stop()
        data.unlink()
        repo = server.repo
        packs = sorted((repo / "packs").rglob("*.pack"))
        pack_bytes = sum(p.stat().st_size for p in packs)
        bs.log(f"source: {len(packs)} packs, {pack_bytes / MB:.0f} MB; PostgreSQL in {pg.started_in:.1f} s, "
               f"Ceph RGW in {state['start_seconds']} s")
        client = s3_client()
        samples: dict[str, list[float]] = {}
        for r in range(args.repeat):
            t0 = time.monotonic()
            for p in packs:
                client.upload_file(str(p), bucket, f"baseline{r}/{p.name}")
            samples.setdefault("s3 upload", []).append(time.monotonic() - t0)
            down = work / f"down{r}"
            down.mkdir()
            t0 = time.monotonic()
            for p in packs:
                client.download_file(bucket, f"baseline{r}/{p.name}", str(down / p.name))
            samples.setdefault("s3 download", []).append(time.monotonic() - t0)
            shutil.rmtree(down)
            t0 = time.monotonic()
            subprocess.run(["cp", "-a", str(repo), str(work / f"copy{r}")], check=True)
            subprocess.run(["sync"], check=True)
            samples.setdefault("cp -a + sync", []).append(time.monotonic() - t0)
            shutil.rmtree(work / f"copy{r}")
            catalog, url = pg.url(pg.create_database()), f"s3://{bucket}/migrated{r}"
            bs.log(f"repeat {r + 1}: migrate to the cluster")
            samples.setdefault("migrate", []).append(
                timed_cli(["migrate", "--repo", str(repo), "--catalog", catalog, "--packs", url]))
            bs.log(f"repeat {r + 1}: migrate --to embedded")
            back = work / f"back{r}"
            samples.setdefault("migrate --to embedded", []).append(
                timed_cli(["migrate", "--to", "embedded", "--repo", str(back), "--catalog", catalog, "--packs", url]))
            shutil.rmtree(back)
        print(f"\n{len(packs)} packs, {pack_bytes / MB:.0f} MB ({args.size_mib} MiB file + {args.small_files} "
              f"× 4 KiB files), {args.repeat} repeat(s), medians\n")
        print("| step | seconds | MB/s of packs | vs baseline |")
        print("|---|---|---|---|")
        base = {"migrate": "s3 upload", "migrate --to embedded": "s3 download"}
        for step in ("s3 upload", "s3 download", "cp -a + sync", "migrate", "migrate --to embedded"):
            secs = statistics.median(samples[step])
            ratio = ""
            if step in base:
                ratio = f"{statistics.median(samples[base[step]]) / secs:.2f}× {base[step]}"
            print(f"| {step} | {secs:.1f} | {pack_bytes / MB / secs:.0f} | {ratio} |")
    finally:
        subprocess.run([str(bench_s3.CEPH), "stop", str(work / "ceph")], capture_output=True)
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
