#!/usr/bin/env python3
"""Benchmark: resumable uploads against a plain whole-file PUT, in the same run.

    .venv/bin/python scripts/bench_resume.py [--size-mib 1024] [--parts 10] [--rounds 1]

Starts ``davbackup serve`` on a fresh repository under ``.bench-tmp/`` and uploads
fresh random data (never the same bytes twice, so dedup does not flatter a run):

* ``whole``        one PUT of the whole file (the baseline);
* ``parts``        the file as N range-PUT parts (``Content-Range: bytes S-E/T``);
* ``interrupted``  one range PUT of the whole file whose connection is dropped at 50 %,
                   then the offset query (``bytes */T``) and one PUT of the rest.

Prints each time, MB/s and the ratio to ``whole`` of the same round (target: ≤ 1.1×).
With several rounds the order rotates and the medians are reported too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
BLOCK = MiB
USER, PASSWORD = "bench", "bench-password"


class Body:
    """A request body of known length sent in 1 MiB blocks; can break off on purpose."""

    def __init__(self, data: memoryview, stop_after: int | None = None) -> None:
        self.data = data
        self.stop_after = stop_after

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[memoryview]:
        for pos in range(0, len(self.data), BLOCK):
            if self.stop_after is not None and pos >= self.stop_after:
                raise ConnectionAbortedError("benchmark: dropping the connection on purpose")
            yield self.data[pos:pos + BLOCK]


class Server:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = dict(os.environ, DAVBACKUP_PASSPHRASE="bench passphrase", HOME=str(workdir),
                        DAVBACKUP_KDF_MEMORY_KIB="1024", PYTHONPATH=str(ROOT))
        repo = workdir / "repo"
        self._cli(["init", "--repo", str(repo)])
        self._cli(["user", "add", USER, "--repo", str(repo)], stdin=PASSWORD + "\n")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = open(workdir / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "davbackup", "serve", "--repo", str(repo), "--port", str(self.port)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.options(self.url + "/", timeout=1)
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"server did not start; see {workdir / 'server.log'}")
                time.sleep(0.1)

    def _cli(self, args: list[str], stdin: str | None = None) -> None:
        subprocess.run([sys.executable, "-m", "davbackup", *args], env=self.env, input=stdin, text=True,
                       check=True, capture_output=True)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def upload_whole(session: requests.Session, url: str, data: memoryview) -> None:
    r = session.put(url, data=Body(data))
    assert r.status_code in (201, 204), r.status_code


def upload_parts(session: requests.Session, url: str, data: memoryview, parts: int) -> None:
    total = len(data)
    size = -(-total // parts)
    for start in range(0, total, size):
        end = min(start + size, total) - 1
        r = session.put(url, data=Body(data[start:end + 1]), headers={"Content-Range": f"bytes {start}-{end}/{total}"})
        assert r.status_code in (308, 201, 204), (r.status_code, r.text)
    assert r.status_code in (201, 204), r.status_code


def upload_interrupted(session: requests.Session, url: str, data: memoryview) -> None:
    total = len(data)
    try:
        session.put(url, data=Body(data, stop_after=total // 2),
                    headers={"Content-Range": f"bytes 0-{total - 1}/{total}"})
        raise AssertionError("the first request should have broken off")
    except (requests.ConnectionError, ConnectionAbortedError):
        pass
    session.close()  # a client that lost its connection starts a new one
    for _ in range(100):  # the server may still be finishing the broken request (423)
        r = session.put(url, data=b"", headers={"Content-Range": f"bytes */{total}"})
        if r.status_code == 308:
            break
        time.sleep(0.02)
    held = int(r.headers["Upload-Offset"])
    assert 0 < held <= total // 2 + BLOCK, held
    r = session.put(url, data=Body(data[held:]), headers={"Content-Range": f"bytes {held}-{total - 1}/{total}"})
    assert r.status_code in (201, 204), (r.status_code, r.text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep .bench-tmp/resume afterwards")
    args = parser.parse_args()

    workdir = ROOT / ".bench-tmp" / "resume"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    server = Server(workdir)
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    size = args.size_mib * MiB
    cases = {
        "whole": lambda url, data: upload_whole(session, url, data),
        "parts": lambda url, data: upload_parts(session, url, data, args.parts),
        "interrupted": lambda url, data: upload_interrupted(session, url, data),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    print(f"{args.size_mib} MiB per upload, {args.parts} parts, {args.rounds} round(s); server {server.url}")
    try:
        for rnd in range(args.rounds):
            names = list(cases)
            names = names[rnd % 3:] + names[:rnd % 3]
            got: dict[str, float] = {}
            for name in names:
                data = memoryview(os.urandom(size))  # fresh bytes: no dedup between runs
                url = f"{server.url}/{name}-{rnd}.bin"
                started = time.perf_counter()
                cases[name](url, data)
                got[name] = time.perf_counter() - started
                del data
            for name in cases:
                times[name].append(got[name])
                ratios[name].append(got[name] / got["whole"])
                print(f"round {rnd + 1} {name:12s} {got[name]:7.2f} s  {size / got[name] / 1e6:7.0f} MB/s  "
                      f"{got[name] / got['whole']:5.2f}x whole")
        if args.rounds > 1:
            print("medians:")
            for name in cases:
                print(f"  {name:12s} {statistics.median(times[name]):7.2f} s  "
                      f"{statistics.median(ratios[name]):5.2f}x whole")
        worst = max(statistics.median(ratios[n]) for n in ("parts", "interrupted"))
        print(f"target <= 1.10x: {'met' if worst <= 1.10 else 'NOT met'} (worst median {worst:.2f}x)")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
