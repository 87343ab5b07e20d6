#!/usr/bin/env python3
"""davbackup vs plain WsgiDAV (FilesystemProvider) and Apache mod_dav: throughput, latency, memory.

All servers run on loopback in their own processes; WsgiDAV FS with the same cheroot
settings (``scripts/bench_wsgidav_fs.py`` mirrors ``provider.settings.ServerSettings``),
Apache httpd 2.4 with mod_dav_fs and its own config (``--apache``,
``scripts/bench_peers.py``). Each repeat starts all of them on fresh directories and
runs every measurement once per server, rotating which server goes first (and
rotating ``dd`` in for the PUT), so drift of the machine hits all alike. The table
shows medians over the repeats, the ratio of medians davbackup / peer and the range
of the per-round ratios; no number here is an assertion, only a report.

Measurements (sizes follow ``--size-mib`` / ``--small-files``):

1. PUT of unique random data, streamed by ``curl -T`` from a file generated up front
   (in the page cache, so client cost is the same for both);
2. re-PUT of the same data under another name (davbackup's dedup path);
3. GET of the file, body discarded (``curl -o /dev/null``), ``--get-runs`` times;
   then ``--range-requests`` GETs of 4 KiB at random offsets of it (the same offsets
   for every server, ``--range-concurrency`` keep-alive connections, every body
   compared with the file);
4. N x 4 KiB PUTs at concurrency 8 (thread pool, one keep-alive ``requests.Session``
   per thread);
5. PROPFIND Depth 1 on the folder of those files (allprop, and the four properties
   rclone asks for), median of several;
6. the server's peak RSS during the big PUT and during a 256 MiB PUT
   (``VmHWM`` after resetting it through ``/proc/PID/clear_refs``, plus a 10 ms
   ``VmRSS`` sampler), to show memory is flat in file size;
7. ``dd bs=1M conv=fsync`` of the same size: the ceiling for data that must be on
   disk before the answer (davbackup fsyncs before it answers; WsgiDAV FS does not).

``--py-spy put,small`` records the davbackup server with py-spy during those
measurements (raw collapsed stacks, summarised by ``scripts/bench_pyspy_summary.py``);
the timings of profiled runs are perturbed and flagged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_clients import (  # noqa: E402
    PASSWORD,
    USER,
    curl_get,
    curl_put,
    dd_fsync,
    propfind,
    ranged_gets,
    small_puts,
)
from bench_measure import PySpy, RssWatch, cpu_seconds, cpu_seconds_all, log, measured_rounds  # noqa: E402
from bench_peers import ApacheDav  # noqa: E402
from bench_servers import (  # noqa: E402  (re-exported for bench_tree, bench_cluster, bench_s3)
    PASSPHRASE,  # noqa: F401
    PYTHON,  # noqa: F401
    ROOT,
    WORK_ROOT,
    BaseBuildServer,
    DavbackupServer,
    Server,
    WsgidavFsServer,
)

MB = 1_000_000
MiB = 1024 * 1024

ALL_MEASUREMENTS = ("rss256", "put", "reput", "get", "range", "small", "propfind")
PROPFIND_ALLPROP = b'<?xml version="1.0" encoding="utf-8"?><propfind xmlns="DAV:"><allprop/></propfind>'
PROPFIND_RCLONE = (
    b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:displayname/><d:getlastmodified/><d:getcontentlength/><d:resourcetype/>"
    b"<d:getcontenttype/></d:prop></d:propfind>"
)


# --------------------------------------------------------------------------- results


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=dict)
    profiled: set[str] = field(default_factory=set)

    def add(self, key: str, value: float | list[float]) -> None:
        self.values.setdefault(key, []).extend(value if isinstance(value, list) else [value])

    def median(self, key: str) -> float | None:
        vals = self.values.get(key)
        return statistics.median(vals) if vals else None


def make_data(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    log(f"generating {size // MiB} MiB of random data in {path.name}")
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def run_repeat(r: int, args: argparse.Namespace, work: Path, files: dict[str, Path],
               bodies: list[bytes], s: Samples, which: set[str]) -> None:
    rdir = work / f"r{r}"
    rdir.mkdir()
    dav, fs = DavbackupServer(rdir), WsgidavFsServer(rdir)
    servers: list[Server] = [dav, fs] if r % 2 == 0 else [fs, dav]
    if args.baseline_build:
        base = BaseBuildServer(rdir)
        servers.insert(r % 3, base)
    if args.apache:
        servers.insert(r % (len(servers) + 1), ApacheDav(rdir, USER, PASSWORD))  # type: ignore[arg-type]
    big, mid = files["big"], files["mid"]
    big_size = big.stat().st_size
    try:
        for srv in servers:
            srv.start()
            log(f"repeat {r + 1}: {srv.label} on {srv.url} (pid {srv.pid})")
        for srv in servers:
            s.add(f"idle_rss/{srv.key}", RssWatch(srv.pid).current_mib())

        def each(name: str, fn: Callable[[Server], None], with_dd: bool = False) -> None:
            order: list[Server | None] = list(servers)
            if with_dd:
                order.insert(r % 3, None)
            for srv in order:
                os.sync()  # earlier writes must not be flushed on this one's time
                time.sleep(0.2)
                if srv is None:
                    s.add("put/dd", big_size / dd_fsync(big, rdir / "dd.out") / MB)
                    continue
                prof = None
                if srv is dav and name in args.py_spy:
                    prof = Path(args.py_spy_dir) / f"{name}-davbackup-r{r + 1}.txt"
                    s.profiled.add(name)
                pids = srv.pids() if isinstance(srv, ApacheDav) else [srv.pid]
                cpu0 = cpu_seconds_all(pids)
                with PySpy(srv.pid if prof else None, prof, gil=args.py_spy_gil, native=args.py_spy_native):
                    fn(srv)
                cpu1 = cpu_seconds_all(pids)
                s.add(f"cpu_{name}/{srv.key}", cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1])
                s.add(f"cpusys_{name}/{srv.key}", cpu1[1] - cpu0[1])

        if "rss256" in which:
            def rss256(srv: Server) -> None:
                with RssWatch(srv.pid) as w:
                    curl_put(srv.url + "rss-256.bin", mid)
                s.add(f"rss256/{srv.key}", w.peak_mib)
            each("rss256", rss256)
        if "put" in which:
            def put(srv: Server) -> None:
                with RssWatch(srv.pid) as w:
                    secs = curl_put(srv.url + "big.bin", big)
                s.add(f"put/{srv.key}", big_size / secs / MB)
                s.add(f"rssbig/{srv.key}", w.peak_mib)
            each("put", put, with_dd=True)
        if "reput" in which:
            def reput(srv: Server) -> None:
                s.add(f"reput/{srv.key}", big_size / curl_put(srv.url + "big-copy.bin", big) / MB)
            each("reput", reput)
        if "get" in which:
            def get(srv: Server) -> None:
                s.add(f"get/{srv.key}", big_size / curl_get(srv.url + "big.bin", big_size) / MB)
            for _ in range(args.get_runs):  # short and noisy: several rounds, servers alternating
                each("get", get)
        if "range" in which:
            def ranged(srv: Server) -> None:
                secs = ranged_gets(srv.url + "big.bin", big, args.range_requests, args.range_concurrency)
                s.add(f"range/{srv.key}", args.range_requests / secs)
            each("range", ranged)
        if "small" in which:
            def small(srv: Server) -> None:
                s.add(f"small/{srv.key}", len(bodies) / small_puts(srv.url, bodies, args.concurrency))
            each("small", small)
        if "propfind" in which:
            def pf(srv: Server) -> None:
                s.add(f"propfind/{srv.key}", [t * 1000 for t in propfind(srv.url, PROPFIND_ALLPROP, len(bodies), args.propfind_runs)])
                s.add(f"propfind_rc/{srv.key}", [t * 1000 for t in propfind(srv.url, PROPFIND_RCLONE, len(bodies), args.propfind_runs)])
            each("propfind", pf)
    finally:
        for srv in servers:
            srv.stop()
        if not args.keep:
            shutil.rmtree(rdir, ignore_errors=True)


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def table(s: Samples, args: argparse.Namespace) -> str:
    m = s.median
    size = f"{args.size_mib / 1024:g} GiB" if args.size_mib >= 1024 else f"{args.size_mib} MiB"
    rows: list[tuple[str, ...]] = []
    apache = bool(args.apache)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def paired(key: str, peer: str) -> str:
        """Range of the per-round ratios (samples of one round are taken side by side)."""
        d, p = s.values.get(f"{key}/davbackup", []), s.values.get(f"{key}/{peer}", [])
        pairs = [x / y for x, y in zip(d, p) if y]
        if not pairs:
            return "–"
        return f"{min(pairs):.2f}–{max(pairs):.2f} (n={len(pairs)})"

    def row(label: str, key: str, unit: str, digits: int, target_text: str,
            check: Callable[[float, float, float], bool | None], peer_for_target: str = "wsgidav") -> None:
        d, f, ap = m(f"{key}/davbackup"), m(f"{key}/wsgidav"), m(f"{key}/apache")
        if d is None and f is None:
            return
        rt = ratio(d, f)
        met = "–"
        base = f if peer_for_target == "wsgidav" else ap
        rb = ratio(d, base)
        if d is not None and base is not None and rb is not None:
            ok = check(d, base, rb)
            met = "–" if ok is None else ("yes" if ok else "**no**")
        mark = " (profiled)" if key.split("_")[0] in s.profiled else ""
        cells = [label + mark, f"{fmt(d, digits)} {unit}", f"{fmt(f, digits)} {unit}",
                 f"{rt:.2f}×" if rt is not None else "–", paired(key, "wsgidav")]
        if apache:
            ra = ratio(d, ap)
            cells += [f"{fmt(ap, digits)} {unit}" if ap is not None else "–",
                      f"{ra:.2f}×" if ra is not None else "–", paired(key, "apache")]
        rows.append(tuple(cells + [target_text, met]))

    dd = m("put/dd")
    put_fs = m("put/wsgidav")
    floor = min(put_fs, dd) if put_fs and dd else None
    row(f"{size} PUT, unique data", "put", "MB/s", 0,
        f"≥ min(FS, dd) = {fmt(floor)} MB/s", lambda d, f, r: d >= floor if floor else None)
    row(f"{size} re-PUT, same data (dedup)", "reput", "MB/s", 0, "≥ 2× unique PUT",
        lambda d, f, r: d >= 2 * (m("put/davbackup") or float("inf")))
    row(f"{size} GET", "get", "MB/s", 0, "≥ 1.0× FS", lambda d, f, r: r >= 1.0)
    row(f"4 KiB GETs at random offsets, {args.range_concurrency} parallel", "range", "req/s", 0,
        "≥ 1.0× FS", lambda d, f, r: r >= 1.0)
    row(f"{args.small_files:,} × 4 KiB PUT, {args.concurrency} parallel", "small", "files/s", 0,
        "≥ 1.0× Apache" if apache else "≥ 1.0× (Apache: --apache)", lambda d, f, r: r >= 1.0,
        "apache" if apache else "wsgidav")
    row(f"PROPFIND Depth 1, {args.small_files:,} entries (allprop)", "propfind", "ms", 1,
        "≤ Apache's time" if apache else "≤ 0.5× FS", lambda d, f, r: r <= (1.0 if apache else 0.5),
        "apache" if apache else "wsgidav")
    row(f"PROPFIND Depth 1, {args.small_files:,} entries (rclone props)", "propfind_rc", "ms", 1,
        "≤ Apache's time" if apache else "≤ 0.5× FS", lambda d, f, r: r <= (1.0 if apache else 0.5),
        "apache" if apache else "wsgidav")
    big_rss, mid_rss = m("rssbig/davbackup"), m("rss256/davbackup")
    row(f"peak server RSS, {size} PUT", "rssbig", "MiB", 0, "< 100 MiB", lambda d, f, r: d < 100)
    flat_ok = (big_rss - mid_rss) < 16 if big_rss is not None and mid_rss is not None else None
    row("peak server RSS, 256 MiB PUT", "rss256", "MiB", 0,
        f"< 100 MiB, flat (Δ {fmt(big_rss - mid_rss if flat_ok is not None else None)} MiB < 16)",
        lambda d, f, r: d < 100 and bool(flat_ok) if flat_ok is not None else d < 100)

    head: tuple[str, ...] = ("measurement", "davbackup", "WsgiDAV FS", "ratio", "per round")
    if apache:
        head += ("Apache mod_dav", "ratio", "per round")
    head += ("target", "met?")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = [f"dd bs=1M conv=fsync, {size} (durable-write ceiling): {fmt(dd)} MB/s"
             + (f"; davbackup PUT = {m('put/davbackup') / dd:.2f}× dd" if dd and m("put/davbackup") else "")]
    idle_d, idle_f = m("idle_rss/davbackup"), m("idle_rss/wsgidav")
    notes.append(f"idle RSS after start: davbackup {fmt(idle_d)} MiB, WsgiDAV FS {fmt(idle_f)} MiB")
    n_rep = len(s.values.get("idle_rss/davbackup", []))
    notes.append(f"medians of {n_rep} repeat(s) ({args.get_runs} GETs per server and repeat), servers "
                 "alternated; ratio = davbackup / peer (for ms: lower is better); MB = 10^6 bytes; "
                 "WsgiDAV FS and Apache do not fsync, davbackup fsyncs pack and catalog before answering")
    cpu = []
    for name in ALL_MEASUREMENTS:
        d, f = m(f"cpu_{name}/davbackup"), m(f"cpu_{name}/wsgidav")
        ds, fs = m(f"cpusys_{name}/davbackup"), m(f"cpusys_{name}/wsgidav")
        if d is not None and f is not None:
            text = f"{name} {d:.2f} ({ds:.2f}) / {f:.2f} ({fs:.2f})"
            ap, aps = m(f"cpu_{name}/apache"), m(f"cpusys_{name}/apache")
            if ap is not None and aps is not None:
                text += f" / {ap:.2f} ({aps:.2f})"
            cpu.append(text)
    if cpu:
        who = "davbackup / WsgiDAV FS" + (" / Apache (all processes)" if apache else "")
        notes.append(f"server CPU seconds per measurement (of which system), {who}: " + ", ".join(cpu))
    notes.append("load average at the end: " + " ".join(f"{x:.1f}" for x in os.getloadavg())
                 + " (other work on the machine makes every figure noisier)")
    if s.profiled:
        notes.append(f"rows marked (profiled) ran under py-spy: their davbackup timings are perturbed")
    out = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    if args.baseline_build:
        out += "\n\n" + base_table(s, args)
    return out


def base_table(s: Samples, args: argparse.Namespace) -> str:
    """This build against ``--baseline-build``, measured in the same run."""
    m = s.median
    head = "| measurement | this build | base build | ratio | target | met? |\n|---|---|---|---|---|---|"
    lines = [f"base build: {args.baseline_build}", "", head]
    for label, key, unit, higher_better in (
        ("PUT, unique data", "put", "MB/s", True), ("re-PUT (dedup)", "reput", "MB/s", True),
        ("GET", "get", "MB/s", True), ("4 KiB GETs at random offsets", "range", "req/s", True),
        ("4 KiB PUTs, parallel", "small", "files/s", True),
        ("PROPFIND Depth 1 (allprop)", "propfind", "ms", False),
        ("PROPFIND Depth 1 (rclone props)", "propfind_rc", "ms", False),
    ):
        d, b = m(f"{key}/davbackup"), m(f"{key}/base")
        if d is None or b is None:
            continue
        ratio = d / b
        ok = ratio >= 0.95 if higher_better else ratio <= 1.05
        target = "≥ 0.95×" if higher_better else "≤ 1.05×"
        lines.append(f"| {label} | {fmt(d, 1)} {unit} | {fmt(b, 1)} {unit} | {ratio:.2f}× | {target} | "
                     f"{'yes' if ok else '**no**'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="davbackup vs plain WsgiDAV FilesystemProvider benchmark")
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the big PUT/GET (default 1024)")
    parser.add_argument("--small-files", type=int, default=2000, help="number of 4 KiB PUTs (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; medians are reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="128 MiB, 300 files, 1 repeat")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel small PUTs (default 8)")
    parser.add_argument("--propfind-runs", type=int, default=5, help="PROPFINDs per server and repeat")
    parser.add_argument("--get-runs", type=int, default=3, help="big GETs per server and repeat (default 3)")
    parser.add_argument("--range-requests", type=int, default=2000, help="4 KiB ranged GETs per server (2000)")
    parser.add_argument("--range-concurrency", type=int, default=4, help="parallel ranged GETs (default 4)")
    parser.add_argument("--apache", action="store_true",
                        help="also measure Apache httpd with mod_dav_fs (installs Debian's apache2 if missing)")
    parser.add_argument("--only", default="", help=f"comma list of {','.join(ALL_MEASUREMENTS)}")
    parser.add_argument("--py-spy", default="", help="comma list of measurements to record davbackup under py-spy")
    parser.add_argument("--py-spy-dir", default=str(WORK_ROOT / "profiles"), help="where py-spy output goes")
    parser.add_argument("--py-spy-gil", action="store_true", help="record only threads holding the GIL")
    parser.add_argument("--py-spy-native", action="store_true", help="record C frames too (py-spy --native)")
    parser.add_argument("--serve-wrapper", help="run davbackup serve through this Python file "
                        "(e.g. scripts/bench_traced_serve.py); its stderr is kept with --keep")
    parser.add_argument("--baseline-build", help="also measure davbackup from this checkout (e.g. a git worktree"
                        " of the previous commit) in the same run, rotated with the others")
    parser.add_argument("--json", help="also write raw samples to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.small_files, args.repeat, args.range_requests = 128, 300, 1, 300
    DavbackupServer.wrapper = str(Path(args.serve_wrapper).resolve()) if args.serve_wrapper else None
    if args.baseline_build:
        base_dir = Path(args.baseline_build).resolve()
        if not (base_dir / "davbackup" / "__init__.py").exists():
            parser.error(f"{base_dir}: not a davbackup checkout")
        BaseBuildServer.extra_env = {"PYTHONPATH": str(base_dir)}
        DavbackupServer.extra_env = {"PYTHONPATH": str(ROOT)}
    which = set(filter(None, args.only.split(","))) or set(ALL_MEASUREMENTS)
    unknown = which - set(ALL_MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    if which & {"reput", "get", "range"}:
        which.add("put")
    if "propfind" in which:
        which.add("small")
    args.py_spy = set(filter(None, args.py_spy.split(",")))
    if args.py_spy:
        Path(args.py_spy_dir).mkdir(parents=True, exist_ok=True)
    for tool in ("curl", "dd"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is required")

    WORK_ROOT.mkdir(exist_ok=True)
    work = WORK_ROOT / f"run-{os.getpid()}"
    work.mkdir()
    s = Samples()

    def rounds() -> None:
        files = {"big": work / "big.bin", "mid": work / "mid-256.bin"}
        make_data(files["big"], args.size_mib * MiB)
        make_data(files["mid"], 256 * MiB)
        bodies = [os.urandom(4096) for _ in range(args.small_files)]
        for r in range(args.repeat):
            log(f"repeat {r + 1}/{args.repeat}")
            run_repeat(r, args, work, files, bodies, s, which)
            for key in sorted(s.values):
                log(f"  {key}: {', '.join(f'{v:.1f}' for v in s.values[key][-8:])}")

    measured_rounds(rounds, work, keep=args.keep, json_path=args.json, values=s.values)
    print(table(s, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
