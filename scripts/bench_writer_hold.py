#!/usr/bin/env python3
"""How long one user's large COPY or DELETE holds up everyone else's small writes.

Usage::

    .venv/bin/python scripts/bench_writer_hold.py [--nodes 100000] [--writers 4] [--repeat 2]
        [--baseline-build DIR] [--json FILE] [--keep]

It builds a repository once (in this process, with this checkout's code) in which
user ``big`` owns ``/tree``: ``--nodes`` nodes (folders of 100 small files, nested
by tens). Then, for each build — this checkout and, with ``--baseline-build``, the
davbackup of another checkout (e.g. ``git worktree add /tmp/base main``), alternating
in order on each repeat — it copies that repository, starts ``davbackup serve`` on
it, and lets ``--writers`` other users PUT 1 KiB files in a loop (each a separate
user, own connection) while ``big``:

1. idles for 3 s (the "idle" row: small PUTs with nothing else going on);
2. COPYs ``/tree`` to ``/copy`` (Depth: infinity, one request);
3. MOVEs ``/copy`` one level deeper, to ``/deeper/copy`` (the depth limit is checked);
4. DELETEs ``/deeper/copy``.

For each phase it prints the small PUTs' count, p50, p99 and maximum latency (ms),
and the duration of the COPY and the DELETE. The target (issue 8): other users'
small writes stay under ~100 ms at p99 while one user copies a 100,000-node tree.
This is a benchmark, not a test: figures from a 2-core machine shared with other
work are noisy; compare builds only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
PASSPHRASE = "bench writer hold"
BIG = ("big", "big-password-1")
FILES_PER_FOLDER = 100


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- building


def build_repository(path: Path, nodes: int, writers: int) -> int:
    """The shared starting point; returns the number of nodes in ``/tree``."""
    os.environ.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")
    sys.path.insert(0, str(ROOT))
    from davbackup.repository import Repository

    repo = Repository.init(path, PASSPHRASE)
    try:
        repo.users.add(*BIG)
        for i in range(writers):
            repo.users.add(f"w{i}", f"writer-password-{i}")
        ns = repo.namespace("big")
        # units: u0 = a folder of 100 small files (101 nodes), u1 = ten u0 (1,011),
        # u2 = ten u1 (10,111), ...; /tree = as many of the largest units as fit
        ns.mkdir("/units")
        ns.mkdir("/units/u0")
        for j in range(FILES_PER_FOLDER):  # distinct small contents: one chunk each
            w = ns.open_write(f"/units/u0/f{j:03d}.txt")
            w.write(f"file {j}\n".encode() * 20)
            w.commit()
        sizes = [FILES_PER_FOLDER + 1]
        while sizes[-1] * 10 + 1 <= nodes:
            level = len(sizes)
            ns.mkdir(f"/units/u{level}")
            for k in range(10):
                ns.copy(f"/units/u{level - 1}", f"/units/u{level}/p{k}", overwrite=False)
            sizes.append(sizes[-1] * 10 + 1)
        ns.mkdir("/tree")
        left, k = nodes - 1, 0
        for level in reversed(range(len(sizes))):
            while sizes[level] <= left:
                ns.copy(f"/units/u{level}", f"/tree/part{k}", overwrite=False)
                left -= sizes[level]
                k += 1
        ns.delete("/units")
        total = sum(1 for _ in ns.walk("/tree")) + 1
        repo.catalog.reader().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return total
    finally:
        repo.close()


# ------------------------------------------------------------------------- serving


class Server:
    def __init__(self, label: str, build: Path, repo: Path, log_path: Path) -> None:
        self.label, self.build, self.repo, self.log_path = label, build, repo, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = _free_port()
        env = dict(os.environ, DAVBACKUP_PASSPHRASE=PASSPHRASE, PYTHONUNBUFFERED="1", PYTHONPATH=str(self.build))
        self.proc = subprocess.Popen(
            [str(PYTHON), "-m", "davbackup", "serve", "--repo", str(self.repo), "--port", str(port)],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, env=env, cwd=self.build,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label}: server exited; see {self.log_path}")
            try:
                requests.request("OPTIONS", self.url + "/", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.label}: server did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmallWriters:
    """``n`` users each PUTting 1 KiB files back to back; latencies with their end times."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.n = url, n
        self.samples: list[tuple[float, float]] = []  # (start, end)
        self.errors: dict[int, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        session = requests.Session()
        session.auth = (f"w{i}", f"writer-password-{i}")
        body = os.urandom(1024)
        k = 0
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                status = session.put(f"{self.url}/small-{k % 200}.bin", data=body, timeout=120).status_code
            except requests.RequestException:
                status = 0
            end = time.monotonic()
            with self._lock:
                if status in (201, 204):
                    self.samples.append((start, end))
                else:
                    self.errors[status] = self.errors.get(status, 0) + 1
            k += 1

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(130)

    def between(self, start: float, end: float) -> list[float]:
        """Latencies of the PUTs that were running at some time in [start, end]: a PUT
        held up for the whole of a long request ends after it, and must count."""
        with self._lock:
            return [e - s for s, e in self.samples if s <= end and e >= start]


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"count": len(values), "p50_ms": 1000 * quantile(values, 0.5), "p99_ms": 1000 * quantile(values, 0.99),
            "max_ms": 1000 * max(values) if values else float("nan"),
            "mean_ms": 1000 * statistics.fmean(values) if values else float("nan")}


def measure(server: Server, writers: int) -> dict[str, Any]:
    big = requests.Session()
    big.auth = BIG
    small = SmallWriters(server.url, writers)
    small.start()
    try:
        time.sleep(2)  # logins cached, connections open
        t0 = time.monotonic()
        time.sleep(3)
        t1 = time.monotonic()
        answer = big.request("COPY", server.url + "/tree/", headers={"Destination": server.url + "/copy/",
                                                                     "Depth": "infinity"}, timeout=3600)
        t2 = time.monotonic()
        if answer.status_code not in (201, 204):
            raise RuntimeError(f"{server.label}: COPY answered {answer.status_code}: {answer.text[:300]}")
        time.sleep(0.5)
        big.request("MKCOL", server.url + "/deeper/", timeout=60)
        t3 = time.monotonic()
        answer = big.request("MOVE", server.url + "/copy/", headers={"Destination": server.url + "/deeper/copy/"},
                             timeout=3600)
        t4 = time.monotonic()
        if answer.status_code not in (201, 204):
            raise RuntimeError(f"{server.label}: MOVE answered {answer.status_code}: {answer.text[:300]}")
        time.sleep(0.5)
        t5 = time.monotonic()
        answer = big.delete(server.url + "/deeper/copy/", timeout=3600)
        t6 = time.monotonic()
        if answer.status_code not in (200, 204):
            raise RuntimeError(f"{server.label}: DELETE answered {answer.status_code}: {answer.text[:300]}")
        time.sleep(0.5)
    finally:
        small.stop()
    return {
        "idle": summary(small.between(t0, t1)),
        "copy": {**summary(small.between(t1, t2)), "seconds": t2 - t1},
        "move": {**summary(small.between(t3, t4)), "seconds": t4 - t3},
        "delete": {**summary(small.between(t5, t6)), "seconds": t6 - t5},
        "errors": small.errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000, help="nodes in the tree that is copied")
    parser.add_argument("--writers", type=int, default=4, help="other users writing small files meanwhile")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--baseline-build", help="also measure davbackup from this checkout, alternating")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    builds = [("this build", ROOT)]
    if args.baseline_build:
        base = Path(args.baseline_build).resolve()
        if not (base / "davbackup" / "__init__.py").exists():
            parser.error(f"{base}: not a davbackup checkout")
        builds.append(("base build", base))
    work = Path(tempfile.mkdtemp(prefix="davbackup-bench-hold-"))
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in builds}
    try:
        log(f"building a tree of about {args.nodes} nodes in {work / 'seed'}")
        started = time.monotonic()
        total = build_repository(work / "seed", args.nodes, args.writers)
        log(f"built /tree with {total} nodes in {time.monotonic() - started:.0f}s")
        for r in range(args.repeat):
            order = builds if r % 2 == 0 else list(reversed(builds))
            for label, build in order:
                repo = work / f"r{r}-{label.replace(' ', '-')}"
                shutil.copytree(work / "seed", repo)
                server = Server(label, build, repo, work / f"{repo.name}.log")
                server.start()
                log(f"repeat {r + 1}: {label} on {server.url}")
                try:
                    figures = measure(server, args.writers)
                finally:
                    server.stop()
                results[label].append(figures)
                log(f"  copy {figures['copy']['seconds']:.1f}s p99 {figures['copy']['p99_ms']:.0f} ms; "
                    f"delete {figures['delete']['seconds']:.1f}s p99 {figures['delete']['p99_ms']:.0f} ms")
                shutil.rmtree(repo, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nOther users' 1 KiB PUTs ({args.writers} writers) while one user COPYs, MOVEs and DELETEs a tree of"
          f" {total} nodes; {args.repeat} repeats, pooled medians of the per-run figures\n")
    print("| build | phase | PUTs | p50 ms | p99 ms | max ms | big request s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, _ in builds:
        for phase in ("idle", "copy", "move", "delete"):
            runs = [res[phase] for res in results[label]]
            med = {k: statistics.median(run[k] for run in runs) for k in ("count", "p50_ms", "p99_ms", "max_ms")}
            secs = statistics.median(run["seconds"] for run in runs) if phase != "idle" else None
            print(f"| {label} | {phase} | {med['count']:.0f} | {med['p50_ms']:.0f} | {med['p99_ms']:.0f} |"
                  f" {med['max_ms']:.0f} | {'' if secs is None else f'{secs:.1f}'} |")
        errors = [res["errors"] for res in results[label] if res["errors"]]
        if errors:
            print(f"\n{label}: failed small PUTs by status: {errors}")
    if args.json:
        Path(args.json).write_text(json.dumps({"nodes": total, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
