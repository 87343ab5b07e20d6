#!/usr/bin/env python3
"""Many-file upload: a generated tree of 10,000+ files, davbackup vs WsgiDAV FS, and
the bundled ``davbackup upload`` vs ``rclone copy``.

    .venv/bin/python scripts/bench_tree.py [--files 10000] [--concurrency 4,16] [--repeat 2]
                                           [--clients] [--baseline-build DIR]

The tree (cached under ``.bench-tmp/tree-<files>-<seed>``) has two levels of folders
and files of 0 B to 2 MiB: three quarters below 16 KiB, a fifth up to 256 KiB, the
rest up to 2 MiB; half text-like (words, compressible), half random bytes.

1. **Server**: for each concurrency, a fresh server of each kind takes the whole tree
   from a plain uploader (``http.client``, one keep-alive connection per thread, all
   folders created first with MKCOL, then one PUT per file from a shared queue, every
   answer checked). Servers are started fresh in every repeat and their order rotates.
   Reported: files/s and MB/s, medians, and the ratio davbackup / WsgiDAV FS per round.
2. **Clients** (``--clients``): on one fresh davbackup server, ``davbackup upload
   --jobs N`` and ``rclone copy --transfers N`` (vendor ``other``) each copy the tree
   into a folder of their own (order alternating), then run again unchanged (both
   skip what is there: rclone by size and time, davbackup by its state file and the
   ETag listed by the server). Reported: seconds of each, ratio davbackup / rclone.

davbackup fsyncs every answer (group commit); WsgiDAV FS does not.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_clients import PASSWORD, USER  # noqa: E402
from bench_measure import PySpy, RssWatch, cpu_seconds, log  # noqa: E402
from bench_server import WORK_ROOT, BaseBuildServer, DavbackupServer, Server, WsgidavFsServer  # noqa: E402

KiB, MiB, MB = 1024, 1024 * 1024, 1_000_000
WORDS = ("backup chunk server client folder version history restore index pack catalog "
         "the of and to in is that for it with as was on be by this are from at or an have not "
         "data file disk time user path name size write read sync commit").split()


# --------------------------------------------------------------------------- the tree


def make_tree(root: Path, files: int, seed: int) -> tuple[list[str], list[tuple[str, int]]]:
    """Folders (parents first) and ``(file, size)`` relative to ``root``; generated once."""
    rng = random.Random(seed)
    top = max(4, int(files ** 0.5 / 2))
    dirs = [f"d{i:03d}" for i in range(top)]
    dirs += [f"d{i:03d}/s{j:02d}" for i in range(top) for j in range(rng.randrange(2, 8))]
    listing: list[tuple[str, int]] = []
    for n in range(files):
        r = rng.random()
        size = rng.randrange(0, 16 * KiB) if r < 0.75 else (
            rng.randrange(16 * KiB, 256 * KiB) if r < 0.98 else rng.randrange(256 * KiB, 2 * MiB + 1))
        kind = "txt" if rng.random() < 0.5 else "bin"
        listing.append((f"{rng.choice(dirs)}/f{n:05d}.{kind}", size))
    marker = root / ".complete"
    if marker.exists():
        return dirs, listing
    if root.exists():
        shutil.rmtree(root)
    log(f"generating {files:,} files ({sum(s for _, s in listing) / MB:,.0f} MB) in {root}")
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    text = " ".join(rng.choice(WORDS) for _ in range(800_000)).encode()  # ~5 MB of words
    for rel, size in listing:
        if rel.endswith(".txt"):
            start = rng.randrange(0, len(text) - size - 1)
            data = (rel.encode() + b"\n" + text[start:start + size])[:size]
        else:
            data = rng.randbytes(size)
        (root / rel).write_bytes(data)
    marker.write_text("ok\n")
    return dirs, listing


# --------------------------------------------------------------------------- plain uploader


def upload_tree(url: str, root: Path, dirs: list[str], listing: list[tuple[str, int]], concurrency: int,
                folder: str) -> float:
    """MKCOL every folder, then PUT every file with ``concurrency`` connections; seconds."""
    parts = urlsplit(url)
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    base = parts.path.rstrip("/") + "/" + folder

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)

    def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> int:
        conn.request(method, quote(path), body=body, headers={"Authorization": auth})
        resp = conn.getresponse()
        resp.read()
        return resp.status

    t0 = time.perf_counter()
    conn = connect()
    for d in ["", *dirs]:
        status = request(conn, "MKCOL", f"{base}/{d}".rstrip("/") + "/")
        if status != 201:
            raise RuntimeError(f"MKCOL {d}: {status}")
    conn.close()
    lock = threading.Lock()
    todo = iter(listing)
    errors: list[str] = []

    def worker() -> None:
        c = connect()
        while not errors:
            with lock:
                item = next(todo, None)
            if item is None:
                break
            rel, _size = item
            status = request(c, "PUT", f"{base}/{rel}", (root / rel).read_bytes())
            if status not in (201, 204):
                errors.append(f"PUT {rel}: {status}")
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"uploads failed: {errors[:3]}")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- clients


def run_timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {out.stderr[-2000:]}")
    return secs


def client_round(srv: Server, root: Path, jobs: int, r: int, state_dir: Path, results: dict[str, list[float]]) -> None:
    env = dict(os.environ, DAVBACKUP_PASSWORD=PASSWORD, XDG_STATE_HOME=str(state_dir))
    dav_cmd = [str(Path(sys.executable).parent / "davbackup"), "upload", "--user", USER, "--jobs", str(jobs),
               srv.url + "by-davbackup/", str(root)]
    obscured = subprocess.run(["rclone", "obscure", PASSWORD], capture_output=True, text=True, check=True).stdout.strip()
    rclone_cmd = ["rclone", "copy", str(root), ":webdav:by-rclone/" + root.name, "--webdav-url", srv.url,
                  "--webdav-user", USER, "--webdav-pass", obscured, "--webdav-vendor", "other",
                  "--transfers", str(jobs), "--checkers", str(2 * jobs), "--exclude", ".complete"]
    order = [("davbackup", dav_cmd), ("rclone", rclone_cmd)]
    if r % 2:
        order.reverse()
    for label, cmd in order:
        results.setdefault(f"{label}/first", []).append(run_timed(cmd, env))
        log(f"  {label} upload: {results[f'{label}/first'][-1]:.1f} s")
    for label, cmd in order:
        results.setdefault(f"{label}/again", []).append(run_timed(cmd, env))
        log(f"  {label} again (nothing changed): {results[f'{label}/again'][-1]:.1f} s")


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", default="4,16", help="comma list (default 4,16)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--clients", action="store_true", help="also davbackup upload vs rclone copy")
    parser.add_argument("--client-jobs", type=int, default=4)
    parser.add_argument("--client-rounds", type=int, help="rounds of the client comparison (default: --repeat)")
    parser.add_argument("--skip-servers", action="store_true", help="only the client comparison")
    parser.add_argument("--baseline-build", help="also measure davbackup from this checkout")
    parser.add_argument("--py-spy", metavar="DIR", help="record the davbackup server with py-spy (raw, 300/s) "
                        "into DIR during its uploads (timings perturbed)")
    parser.add_argument("--py-spy-gil", action="store_true", help="only samples of the thread holding the GIL")
    args = parser.parse_args()
    if args.baseline_build:
        BaseBuildServer.extra_env = {"PYTHONPATH": str(Path(args.baseline_build).resolve())}
        DavbackupServer.extra_env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    levels = [int(x) for x in args.concurrency.split(",") if x]
    WORK_ROOT.mkdir(exist_ok=True)
    tree = WORK_ROOT / f"tree-{args.files}-{args.seed}"
    dirs, listing = make_tree(tree, args.files, args.seed)
    total = sum(size for _, size in listing)
    work = WORK_ROOT / f"tree-run-{os.getpid()}"
    work.mkdir()
    rates: dict[str, list[float]] = {}
    rss: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    clients: dict[str, list[float]] = {}
    try:
        for r in range(args.repeat):
            if args.skip_servers:
                break
            for level in levels:
                rdir = work / f"r{r}-c{level}"
                rdir.mkdir()
                servers: list[Server] = [DavbackupServer(rdir), WsgidavFsServer(rdir)]
                if args.baseline_build:
                    servers.append(BaseBuildServer(rdir))
                shift = (r + levels.index(level)) % len(servers)
                servers = servers[shift:] + servers[:shift]
                for srv in servers:
                    srv.start()
                    try:
                        os.sync()
                        prof = None
                        if args.py_spy and srv.key == "davbackup":
                            prof = Path(args.py_spy) / f"tree-r{r + 1}-c{level}.txt"
                        cpu0 = sum(cpu_seconds(srv.pid))
                        with RssWatch(srv.pid) as watch, PySpy(srv.pid if prof else None, prof, rate=300,
                                                                  gil=args.py_spy_gil):
                            secs = upload_tree(srv.url, tree, dirs, listing, level, "tree")
                        cpu_ms = (sum(cpu_seconds(srv.pid)) - cpu0) * 1000 / len(listing)
                        rates.setdefault(f"{srv.key}/{level}", []).append(len(listing) / secs)
                        rss.setdefault(f"{srv.key}/{level}", []).append(watch.peak_mib)
                        cpu.setdefault(f"{srv.key}/{level}", []).append(cpu_ms)
                        log(f"repeat {r + 1}, {level} parallel: {srv.label} {len(listing) / secs:,.0f} files/s, "
                            f"{total / secs / MB:.1f} MB/s, peak RSS {watch.peak_mib:.0f} MiB, "
                            f"server CPU {cpu_ms:.2f} ms/file, load {os.getloadavg()[0]:.1f}"
                            + (" (profiled)" if prof else ""))
                    finally:
                        srv.stop()
                shutil.rmtree(rdir, ignore_errors=True)
        if args.clients:
            for r in range(args.client_rounds or args.repeat):
                rdir = work / f"clients-{r}"
                rdir.mkdir()
                srv = DavbackupServer(rdir)
                srv.start()
                try:
                    client_round(srv, tree, args.client_jobs, r, rdir / "state", clients)
                finally:
                    srv.stop()
                shutil.rmtree(rdir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(rates, rss, cpu, clients, levels, len(listing), total, args))
    return 0


def report(rates: dict[str, list[float]], rss: dict[str, list[float]], cpu: dict[str, list[float]],
           clients: dict[str, list[float]],
           levels: list[int], files: int, total: int, args: argparse.Namespace) -> str:
    med = statistics.median
    lines = [f"tree: {files:,} files, {total / MB:,.0f} MB; load average at the end "
             + " ".join(f"{x:.1f}" for x in os.getloadavg()), ""]
    if rates:
        lines += ["| parallel | davbackup files/s | WsgiDAV FS files/s | ratio | per round | davbackup MB/s | "
                  "server CPU ms/file davbackup / FS | peak RSS davbackup / FS | target |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for level in levels:
            d, f = rates.get(f"davbackup/{level}", []), rates.get(f"wsgidav/{level}", [])
            if not d or not f:
                continue
            pairs = [x / y for x, y in zip(d, f)]
            lines.append(f"| {level} | {med(d):,.0f} | {med(f):,.0f} | {med(d) / med(f):.2f}× | "
                         f"{min(pairs):.2f}–{max(pairs):.2f} (n={len(pairs)}) | {med(d) * total / files / MB:.1f} | "
                         f"{med(cpu[f'davbackup/{level}']):.2f} / {med(cpu[f'wsgidav/{level}']):.2f} | "
                         f"{med(rss[f'davbackup/{level}']):.0f} / {med(rss[f'wsgidav/{level}']):.0f} MiB | ≥ 1.5× |")
            b = rates.get(f"base/{level}")
            if b:
                pairs = [x / y for x, y in zip(d, b)]
                lines.append(f"|   base build | {med(b):,.0f} | | this / base {med(d) / med(b):.2f}× | "
                             f"{min(pairs):.2f}–{max(pairs):.2f} | | {med(cpu[f'base/{level}']):.2f} | "
                             f"{med(rss[f'base/{level}']):.0f} MiB | |")
    if clients:
        lines += ["", "| client | first upload s | again, unchanged s |", "|---|---|---|"]
        for label in ("davbackup", "rclone"):
            lines.append(f"| {label} ({args.client_jobs} parallel) | {med(clients[f'{label}/first']):.1f} | "
                         f"{med(clients[f'{label}/again']):.1f} |")
        first = med(clients["davbackup/first"]) / med(clients["rclone/first"])
        again = med(clients["davbackup/again"]) / med(clients["rclone/again"])
        lines.append(f"\ndavbackup upload / rclone copy time: first {first:.2f}×, unchanged {again:.2f}× "
                     f"(≤ 1.0× is the target; medians of {len(clients['rclone/first'])} rounds)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
