#!/usr/bin/env python3
"""The floor of the required stack (WsgiDAV on cheroot): what cheroot itself does with a
WSGI app that does the minimum, beside WsgiDAV FS, Apache mod_dav and davbackup.

    .venv/bin/python scripts/bench_floor.py [--repeat 4] [--small-files 2000] [--size-mib 1024]
                                            [--floors floor,nosync,auth,limits] [--only small,range]
                                            [--py-spy small,range --py-spy-servers davbackup,floor-limits]
                                            [--py-spy-gil] [--in-process] [--json FILE]

Servers, all on 127.0.0.1, each in its own process, started fresh on fresh directories
in every repeat:

* **cheroot floor** variants (``scripts/bench_floor_app.py``, same cheroot and the same
  thread count, timeouts, backlog and block size as ``davbackup serve``, read from
  ``provider.settings.ServerSettings``): ``floor`` = PUT writes the body to a file and
  fsyncs it before the ``201``, GET with a ``Range`` header answers those bytes by one
  ``pread`` (``206``), no authentication, no WebDAV; ``nosync`` = the same without the
  fsync; ``auth`` = ``floor`` behind HTTP Basic authentication checked against a cache
  of accepted headers (what any authenticated server does at least); ``limits`` =
  ``auth`` plus davbackup's own cheroot additions (``provider.http_limits.install``:
  header limits, per-address connection counts, one ``sendmsg`` per small answer);
* **WsgiDAV FS** (``scripts/bench_wsgidav_fs.py``, same settings), **Apache mod_dav**
  (``bench_peers.ApacheDav``) and **davbackup** (``bench_servers.DavbackupServer``).

Measurements, with the clients of ``scripts/bench`` (``bench_clients``), one server
after the other, their order rotated each repeat so drift of the machine hits all alike
(``os.sync()`` before each):

1. ``small``: N x 4 KiB PUTs (``--small-files``, default 2,000) with ``--concurrency``
   (8) keep-alive sessions: files/s (``bench_clients.small_puts``);
2. ``range``: ``--range-requests`` (2,000) GETs of 4 KiB at random offsets (the same
   for every server, every body compared) of a ``--size-mib`` file of random bytes PUT
   first, ``--range-concurrency`` (4) keep-alive connections: req/s
   (``bench_clients.ranged_gets``).

For each: the server's CPU time (user + system, all of Apache's processes) over the
measurement divided by the requests, in ms, which is the steadier figure on a shared
machine; the client's own CPU per request (this process: Python clients on the same
two cores); the one-minute load average when each measurement began. The tables give
medians over the repeats, the range of the rounds, the ratios of medians to Apache and
to WsgiDAV FS with the range of the per-round ratios, and each server's CPU per request
as a share of davbackup's. No figure is an assertion, only a report.

``--in-process`` also times, in this process and without HTTP, the steps davbackup's
ranged GET adds to the floor (the cached password check, the path lookup, a verified
reader's seek and 4 KiB read of the ``--size-mib`` file stored in a fresh repository)
beside a plain ``pread``: CPU ms per call.

Durability differs: davbackup fsyncs pack and catalog before it answers (group
commit), ``floor``/``auth``/``limits`` fsync each file, ``nosync``, WsgiDAV FS and
Apache do not fsync. The floor's ranged GET reads 4 KiB of a plain file; davbackup must
read, decrypt and verify the whole chunk around the range, so for ranged GETs the floor
is the floor of the HTTP path, not of davbackup's work.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_clients import PASSWORD, USER, curl_put, ranged_gets, small_puts  # noqa: E402
from bench_measure import PySpy, cpu_seconds_all, log, measured_rounds  # noqa: E402
from bench_peers import ApacheDav  # noqa: E402
from bench_server import Samples, fmt, make_data  # noqa: E402
from bench_servers import PASSPHRASE, PYTHON, ROOT, WORK_ROOT, DavbackupServer, Server, WsgidavFsServer  # noqa: E402

MiB = 1024 * 1024
MEASUREMENTS = ("range", "small")
#: variant -> (key, label, flags of bench_floor_app.py)
FLOORS: dict[str, tuple[str, str, list[str]]] = {
    "floor": ("floor", "cheroot floor (PUT fsync)", ["--fsync"]),
    "nosync": ("floor-nosync", "cheroot floor, no fsync", []),
    "auth": ("floor-auth", "cheroot floor + Basic auth (PUT fsync)", ["--fsync", "--auth"]),
    "limits": ("floor-limits", "floor + auth + davbackup's http_limits (PUT fsync)", ["--fsync", "--auth", "--limits"]),
}


class Bench(Protocol):
    label: str
    url: str

    @property
    def key(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class FloorServer(Server):
    """``scripts/bench_floor_app.py`` with the flags of one variant."""

    def __init__(self, workdir: Path, variant: str) -> None:
        self._key, self.label, self.flags = FLOORS[variant]
        super().__init__(workdir)

    @property
    def key(self) -> str:
        return self._key

    def prepare(self) -> None:
        self.root = self.workdir / f"{self.key}-root"
        self.root.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [str(PYTHON), str(ROOT / "scripts" / "bench_floor_app.py"), "--root", str(self.root),
                "--user", USER, "--password", PASSWORD, *self.flags]


def server_pids(srv: Bench) -> list[int]:
    if isinstance(srv, ApacheDav):
        return srv.pids()
    assert isinstance(srv, Server)
    return [srv.pid]


def client_cpu() -> float:
    """CPU seconds of this process (the client threads), user + system."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_repeat(r: int, args: argparse.Namespace, work: Path, big: Path, bodies: list[bytes], s: Samples) -> None:
    rdir = work / f"r{r}"
    rdir.mkdir()
    servers: list[Bench] = [FloorServer(rdir, v) for v in args.floors]
    servers += [WsgidavFsServer(rdir), ApacheDav(rdir, USER, PASSWORD), DavbackupServer(rdir)]
    shift = r % len(servers)
    servers = servers[shift:] + servers[:shift]
    try:
        for srv in servers:
            srv.start()
            log(f"repeat {r + 1}: {srv.label} on {srv.url}")

        def each(name: str, count: int, fn: Callable[[Bench], float]) -> None:
            for srv in servers:
                os.sync()  # earlier writes must not be flushed on this one's time
                time.sleep(0.2)
                s.add(f"load_{name}/{srv.key}", os.getloadavg()[0])
                prof = None
                if srv.key in args.py_spy_servers and name in args.py_spy:
                    prof = Path(args.py_spy_dir) / f"{name}-{srv.key}-r{r + 1}.txt"
                    s.profiled.add(f"{name}/{srv.key}")
                pids = server_pids(srv)
                cpu0, client0 = cpu_seconds_all(pids), client_cpu()
                with PySpy(pids[0] if prof else None, prof, gil=args.py_spy_gil):
                    secs = fn(srv)
                cpu1, client1 = cpu_seconds_all(pids), client_cpu()
                s.add(f"client_{name}/{srv.key}", (client1 - client0) / count * 1000)
                s.add(f"{name}/{srv.key}", count / secs)
                s.add(f"cpu_{name}/{srv.key}", (cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1]) / count * 1000)
                s.add(f"cpusys_{name}/{srv.key}", (cpu1[1] - cpu0[1]) / count * 1000)

        if "range" in args.only:
            for srv in servers:
                curl_put(srv.url + "big.bin", big)
            each("range", args.range_requests,
                 lambda srv: ranged_gets(srv.url + "big.bin", big, args.range_requests, args.range_concurrency))
        if "small" in args.only:
            each("small", len(bodies), lambda srv: small_puts(srv.url, bodies, args.concurrency))
    finally:
        for srv in servers:
            srv.stop()
        if not args.keep:
            shutil.rmtree(rdir, ignore_errors=True)


# --------------------------------------------------------------------------- in-process


def in_process(work: Path, big: Path, count: int, seed: int = 12) -> str:
    """CPU per call of what davbackup's ranged GET does beyond the HTTP floor, in this
    process with no HTTP: the cached password check, the path lookup, and a verified
    reader of the version at a random offset (``seek`` + one 4 KiB ``read``: the whole
    chunk around it is read, decrypted and verified), as ``provider.get_direct`` does
    per request; and a plain ``pread`` of 4 KiB of the same file for comparison."""
    from davbackup.repository import Repository

    repo = Repository.init(work / "inproc-repo", PASSPHRASE)
    try:
        repo.users.add(USER, PASSWORD)
        ns = repo.namespace(USER)
        pending = ns.open_write("/big.bin")
        with open(big, "rb") as f:
            while block := f.read(MiB):
                pending.write(block)
        pending.commit()
        entry = ns.lookup("/big.bin")
        assert entry is not None and entry.version_id is not None
        size = entry.size
        rng = random.Random(seed)
        offsets = [rng.randrange(0, size - 4096) for _ in range(count)]
        chunks = ns.store.chunk_lists.get(entry.version_id, size, entry.etag)

        def timed(fn: Callable[[int], object]) -> float:
            t0 = os.times()
            for offset in offsets:
                fn(offset)
            t1 = os.times()
            return (t1.user - t0.user + t1.system - t0.system) / count * 1000

        def verified(offset: int) -> None:
            assert entry is not None and entry.version_id is not None
            reader = ns.version_reader(entry.version_id, size, entry.etag, entry.path)
            reader.seek(offset)
            if len(reader.read(4096)) != 4096:
                raise RuntimeError("short read")
            reader.close()

        fd = os.open(big, os.O_RDONLY)
        try:
            rows = [
                ("users.verify (cached password check)", timed(lambda _: repo.users.verify(USER, PASSWORD))),
                ("Namespace.lookup of the file", timed(lambda _: ns.lookup("/big.bin"))),
                ("verified reader: seek + read 4 KiB", timed(verified)),
                ("os.pread of 4 KiB of the plain file", timed(lambda o: os.pread(fd, 4096, o))),
            ]
        finally:
            os.close(fd)
        chunks = ns.store.chunk_lists.get(entry.version_id, size, entry.etag) or chunks
    finally:
        repo.close()
    avg = f"{size / len(chunks) / 1024:.0f} KiB" if chunks else "?"
    lines = [f"In-process, {count:,} calls each, {len(chunks) if chunks else '?'} chunks of {avg} on average "
             f"(load average {os.getloadavg()[0]:.1f}):", "", "| step | CPU ms per call |", "|---|---|"]
    lines += [f"| {label} | {ms:.3f} |" for label, ms in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- report


def per_round(s: Samples, key: str, a: str, b: str) -> str:
    pairs = [x / y for x, y in zip(s.values.get(f"{key}/{a}", []), s.values.get(f"{key}/{b}", []), strict=False) if y]
    return f"{min(pairs):.2f}–{max(pairs):.2f}" if pairs else "–"


def spread(vals: Sequence[float], digits: int = 0) -> str:
    return f"{fmt(min(vals), digits)}–{fmt(max(vals), digits)}" if vals else "–"


def table(s: Samples, name: str, unit: str, keys: list[tuple[str, str]]) -> str:
    m = s.median
    head = (f"| server | {unit} (median) | rounds | × Apache (per round) | × WsgiDAV FS (per round) "
            "| server CPU ms/request (system) | CPU × davbackup's | client CPU ms/request |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    ap, fs, dav_cpu = m(f"{name}/apache"), m(f"{name}/wsgidav"), m(f"cpu_{name}/davbackup")
    for key, label in keys:
        v = m(f"{name}/{key}")
        if v is None:
            continue
        cpu, sys_cpu = m(f"cpu_{name}/{key}"), m(f"cpusys_{name}/{key}")
        mark = " (profiled)" if f"{name}/{key}" in s.profiled else ""
        cells = [
            label + mark,
            fmt(v),
            spread(s.values[f"{name}/{key}"]),
            f"{v / ap:.2f}× ({per_round(s, name, key, 'apache')})" if ap else "–",
            f"{v / fs:.2f}× ({per_round(s, name, key, 'wsgidav')})" if fs else "–",
            f"{cpu:.2f} ({sys_cpu:.2f})" if cpu is not None and sys_cpu is not None else "–",
            f"{cpu / dav_cpu:.2f}" if cpu is not None and dav_cpu else "–",
            f"{fmt(m(f'client_{name}/{key}'), 2)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    loads = [x for k, vals in s.values.items() if k.startswith(f"load_{name}/") for x in vals]
    n = max((len(v) for k, v in s.values.items() if k.startswith(f"{name}/")), default=0)
    lines.append("")
    lines.append(f"- {n} repeat(s); load average (1 min) when a measurement began: median "
                 f"{fmt(statistics.median(loads) if loads else None, 1)}, {spread(loads, 1)}")
    return "\n".join(lines)


def report(s: Samples, args: argparse.Namespace, settings: dict[str, object]) -> str:
    keys = [(FLOORS[v][0], FLOORS[v][1]) for v in args.floors]
    keys += [("wsgidav", "WsgiDAV FS"), ("apache", "Apache mod_dav"), ("davbackup", "davbackup")]
    out = []
    if "small" in args.only:
        out += [f"{args.small_files:,} × 4 KiB PUT, {args.concurrency} parallel (files/s)", "",
                table(s, "small", "files/s", keys), ""]
    if "range" in args.only:
        out += [f"{args.range_requests:,} GETs of 4 KiB at random offsets of {args.size_mib} MiB, "
                f"{args.range_concurrency} parallel (req/s)", "", table(s, "range", "req/s", keys), ""]
    out.append(f"cheroot settings of every cheroot server (from ServerSettings): {settings}; "
               f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if s.profiled:
        out.append("rows marked (profiled) ran under py-spy: their timings and CPU are perturbed")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=4, help="repeats; medians are reported (default 4)")
    parser.add_argument("--small-files", type=int, default=2000, help="number of 4 KiB PUTs (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel small PUTs (default 8)")
    parser.add_argument("--size-mib", type=int, default=1024, help="file for the ranged GETs (default 1024)")
    parser.add_argument("--range-requests", type=int, default=2000, help="4 KiB ranged GETs per server (2000)")
    parser.add_argument("--range-concurrency", type=int, default=4, help="parallel ranged GETs (default 4)")
    parser.add_argument("--floors", default=",".join(FLOORS), help=f"floor variants, comma list of {','.join(FLOORS)}")
    parser.add_argument("--only", default=",".join(MEASUREMENTS), help=f"comma list of {','.join(MEASUREMENTS)}")
    parser.add_argument("--py-spy", default="", help="comma list of measurements to record under py-spy")
    parser.add_argument("--py-spy-servers", default="davbackup", help="keys of the servers py-spy records")
    parser.add_argument("--py-spy-gil", action="store_true", help="record only threads holding the GIL")
    parser.add_argument("--py-spy-dir", default=str(WORK_ROOT / "profiles"), help="where py-spy output goes")
    parser.add_argument("--in-process", action="store_true",
                        help="also time, without HTTP, the steps of davbackup's ranged GET beyond the floor")
    parser.add_argument("--json", help="also write raw samples to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    args.floors = [v for v in args.floors.split(",") if v]
    args.only = {v for v in args.only.split(",") if v}
    if set(args.floors) - set(FLOORS) or args.only - set(MEASUREMENTS):
        parser.error("unknown floor variant or measurement")
    args.py_spy = {v for v in args.py_spy.split(",") if v}
    args.py_spy_servers = {v for v in args.py_spy_servers.split(",") if v}
    if args.py_spy:
        Path(args.py_spy_dir).mkdir(parents=True, exist_ok=True)
    if shutil.which("curl") is None:
        parser.error("curl is required")
    from bench_wsgidav_fs import davbackup_server_settings

    settings = davbackup_server_settings()
    WORK_ROOT.mkdir(exist_ok=True)
    work = WORK_ROOT / f"floor-{os.getpid()}"
    work.mkdir()
    s = Samples()
    extra: list[str] = []

    def rounds() -> None:
        big = work / "big.bin"
        if "range" in args.only or args.in_process:
            make_data(big, args.size_mib * MiB)
        bodies = [os.urandom(4096) for _ in range(args.small_files)]
        for r in range(args.repeat):
            log(f"repeat {r + 1}/{args.repeat}")
            run_repeat(r, args, work, big, bodies, s)
            for key in sorted(s.values):
                if not key.startswith(("cpusys_", "load_", "client_")):
                    log(f"  {key}: {', '.join(f'{v:.2f}' for v in s.values[key])}")
        if args.in_process:
            log("in-process steps of a ranged GET")
            extra.append(in_process(work, big, args.range_requests))

    measured_rounds(rounds, work, keep=args.keep, json_path=args.json, values=s.values)
    print(report(s, args, settings))
    if extra:
        print("\n" + extra[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
