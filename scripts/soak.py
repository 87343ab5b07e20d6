#!/usr/bin/env python3
"""Soak test: many concurrent clients against a real ``davbackup serve``, then a full audit.

What it does, in order:

1. creates a repository in a fresh directory (``davbackup init``, ``user add`` for
   ``--users`` users) and starts ``davbackup serve`` on a free loopback port, with
   the default server settings;
2. runs ``--clients`` client threads (spread over the users) for the given time. Each
   runs random operations in its own folder (:mod:`soak_client`): PUT of 1 KiB up
   to ``--max-size-mib`` (log-uniform, 95 % up to 2 MiB; a quarter repeat earlier
   contents, so deduplication is exercised), overwrites, GET whole and with ranges (every byte
   compared), PROPFIND Depth 1 (compared with the model), MKCOL, MOVE, COPY of
   files and folders, DELETE of files and folders, LOCK / PUT refused without the
   token / PUT with it / UNLOCK, PROPPATCH, and resumable uploads over all three
   protocols (range PUT, SabreDAV PATCH, IETF draft) with requests cut off at a
   random byte and resumed. Every ``--gc-every`` seconds (60) ``davbackup gc --grace
   120`` runs beside the server, so deleted data is reclaimed while clients write
   (and the repository stays bounded: history retention is set to keep nothing);
3. stops the load (running operations finish), notes the server's RSS, restarts
   the server (SIGTERM, start again) and reads back every file the server
   acknowledged, comparing every byte, and compares every folder listing with the
   model (lost files, wrong bytes, entries that should not exist);
4. stops the server and runs ``davbackup check --read-data``.

It prints requests/s, p50/p99 per request kind, answers by status (expected ones
such as a 423 after a cut-off upload apart from unexpected ones, with samples), the
server's RSS at start, after the first minute and at the end, and the audit. The
exit status is 0 only with no unexpected answer, no lost or wrong file and a clean
check. Targets (issue 8, benchmark not test): 0 unexpected statuses, 0 lost or
wrong files, RSS growth < 20 % after the first minute.

Usage: scripts/soak [--minutes 10 | --seconds N] [--clients 50] [--users 3]
       [--max-size-mib 64] [--gc-every 60] [--seed N] [--workdir DIR] [--keep]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_client import SoakClient  # noqa: E402
from soak_content import MiB, Recorder, matches  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PASSPHRASE = "soak passphrase, not secret"


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, workdir: Path, users: dict[str, str]) -> None:
        self.workdir = workdir
        self.repo = workdir / "repo"
        self.port = free_port()
        self.env = dict(os.environ, DAVBACKUP_PASSPHRASE=PASSPHRASE, HOME=str(workdir), PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.pop("XDG_CONFIG_HOME", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.cli(["init", "--repo", str(self.repo)])
        for name, password in users.items():
            self.cli(["user", "add", name, "--repo", str(self.repo), "--role", "rw"], stdin=password + "\n")
        # no history kept: gc then reclaims deleted and replaced data during the run,
        # which bounds the repository (history has its own tests)
        self.cli(["history", "set", "--repo", str(self.repo), "--keep-all", "0", "--daily", "0", "--weekly", "0"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, args: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "davbackup", *args], input=stdin, capture_output=True,
                                text=True, env=self.env, cwd=self.workdir)
        if check and result.returncode != 0:
            raise RuntimeError(f"davbackup {args[0]} failed: {result.stdout}{result.stderr}")
        return result

    def start(self) -> None:
        self.starts += 1
        log_file = open(self.workdir / f"server-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "davbackup", "serve", "--repo", str(self.repo), "--port", str(self.port)],
            stdout=log_file, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
        log_file.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                requests.request("OPTIONS", self.url + "/", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def rss_mib(self) -> float:
        assert self.proc is not None
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        match = re.search(r"VmRSS:\s+(\d+) kB", text)
        return int(match.group(1)) / 1024 if match else 0.0

    def log_problems(self) -> dict[str, int]:
        counts = {"traceback": 0, "error": 0}
        for path in sorted(self.workdir.glob("server-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("Traceback"):
                    counts["traceback"] += 1
                if " ERROR " in line or line.startswith("ERROR"):
                    counts["error"] += 1
        return counts


class GcLoop(threading.Thread):
    """``davbackup gc --grace GRACE`` every ``every`` seconds while the load runs."""

    GRACE = 120

    def __init__(self, server: Server, every: float, stop: threading.Event) -> None:
        super().__init__(name="soak-gc", daemon=True)
        self.server, self.every, self.stop = server, every, stop
        self.runs: list[dict[str, Any]] = []

    def run(self) -> None:
        while not self.stop.wait(self.every):
            started = time.monotonic()
            result = self.server.cli(["gc", "--repo", str(self.server.repo), "--grace", str(self.GRACE)],
                                     check=False)
            lines = [line for line in (result.stdout + result.stderr).strip().splitlines() if "gc:" in line]
            output = " / ".join(lines)
            self.runs.append({"exit_code": result.returncode, "seconds": round(time.monotonic() - started, 1),
                              "output": output})
            log(f"gc: exit {result.returncode}: {output}")


def audit(clients: list[SoakClient], base_url: str, rec: Recorder) -> dict[str, Any]:
    """Read back every acknowledged file and compare every listing with the models."""
    result = {"files": 0, "bytes": 0, "lost": 0, "wrong": 0, "extra_entries": 0, "missing_entries": 0,
              "uncertain": 0, "problems": []}
    for client in clients:
        session = requests.Session()
        session.auth = client.session.auth
        result["uncertain"] += len(client.uncertain)
        for path, content in sorted(client.files.items()):
            if path in client.uncertain:
                continue
            result["files"] += 1
            r = session.get(client.url(path), stream=True, timeout=300)
            if r.status_code == 404:
                result["lost"] += 1
                result["problems"].append(f"lost: {client.user}:{path}")
                continue
            ok, n = matches(content, r.iter_content(1 * MiB))
            result["bytes"] += n
            if r.status_code != 200 or not ok or n != content.size:
                result["wrong"] += 1
                result["problems"].append(f"wrong: {client.user}:{path} status {r.status_code}, {n} bytes")
        client.session = session
        for folder in sorted(client.dirs):
            try:
                seen = client.listing(folder) or set()
            except Exception as exc:  # noqa: BLE001 - reported, the audit goes on
                result["problems"].append(f"listing {client.user}:{folder}: {exc!r}")
                result["missing_entries"] += 1
                continue
            want = {p for p in list(client.files) + list(client.dirs) if p.rsplit("/", 1)[0] == folder}
            extra = seen - want - client.uncertain
            missing = want - seen - client.uncertain
            result["extra_entries"] += len(extra)
            result["missing_entries"] += len(missing)
            result["problems"] += [f"should not exist: {client.user}:{p}" for p in sorted(extra)]
            result["problems"] += [f"not listed: {client.user}:{p}" for p in sorted(missing)]
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="davbackup-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    users = {f"soak{i + 1}": secrets.token_urlsafe(12) for i in range(args.users)}
    log(f"repository in {workdir}")
    server = Server(workdir, users)
    server.start()
    report: dict[str, Any] = {"seconds": seconds, "clients": args.clients, "users": args.users,
                              "max_size_mib": args.max_size_mib, "workdir": str(workdir)}
    try:
        time.sleep(1)
        rss = {"start": server.rss_mib()}
        rec = Recorder()
        stop = threading.Event()
        names = list(users)
        clients = [SoakClient(i, server.url, names[i % len(names)], users[names[i % len(names)]], rec, stop,
                              max_size=args.max_size_mib * MiB, seed=args.seed * 1000 + i)
                   for i in range(args.clients)]
        threads = [threading.Thread(target=c.run, name=f"soak-{c.index}", daemon=True) for c in clients]
        gc = GcLoop(server, args.gc_every, stop)
        started = time.monotonic()
        for t in threads:
            t.start()
        if args.gc_every > 0:
            gc.start()
        samples: list[tuple[float, float]] = []
        while time.monotonic() - started < seconds:
            time.sleep(min(5.0, max(0.1, seconds - (time.monotonic() - started))))
            elapsed = time.monotonic() - started
            samples.append((elapsed, server.rss_mib()))
            if elapsed >= 60 and "after_first_minute" not in rss:
                rss["after_first_minute"] = samples[-1][1]
            if int(elapsed) % 60 < 5:
                log(f"{elapsed:.0f}s: {rec.total()} requests, RSS {samples[-1][1]:.0f} MiB, "
                    f"{sum(rec.unexpected.values())} unexpected")
        stop.set()
        load_seconds = time.monotonic() - started
        log("load stopped; waiting for running operations")
        for t in threads:
            t.join(timeout=900)
        if gc.is_alive():
            gc.join()
        wall = time.monotonic() - started
        rss["end"] = server.rss_mib()
        rss["peak_sampled"] = max([rss["start"], rss["end"], *[m for _, m in samples]])
        report.update({
            "load_seconds": round(load_seconds, 1), "wall_seconds": round(wall, 1),
            "requests": rec.total(), "requests_per_s": round(rec.total() / wall, 1),
            "upload_mib": round(rec.bytes_up / MiB, 1), "download_mib": round(rec.bytes_down / MiB, 1),
            "operations": sum(c.ops for c in clients), "methods": rec.table(),
            "unexpected": {f"{label} {status}": n for (label, status), n in sorted(rec.unexpected.items())},
            "unexpected_samples": rec.samples, "client_errors": [c.error for c in clients if c.error],
            "rss_mib": {k: round(v, 1) for k, v in rss.items()},
            "stuck_clients": sum(t.is_alive() for t in threads),
            "cut_requests": dict(rec.cuts), "gc_runs": gc.runs,
        })
        base = rss.get("after_first_minute")
        report["rss_growth_after_first_minute"] = round((rss["end"] - base) / base, 3) if base else None
        log("restarting the server, then reading back every acknowledged file")
        server.stop()
        server.start()
        report["audit"] = audit(clients, server.url, rec)
    finally:
        server.stop()
    log("davbackup check --read-data")
    check_started = time.monotonic()
    check = server.cli(["check", "--repo", str(server.repo), "--read-data"], check=False)
    report["check"] = {"exit_code": check.returncode, "seconds": round(time.monotonic() - check_started, 1),
                       "output": (check.stdout + check.stderr).strip().splitlines()[-5:]}
    stats = server.cli(["stats", "--repo", str(server.repo)], check=False)
    report["stats"] = stats.stdout.strip().splitlines()
    report["server_log"] = server.log_problems()
    if passed(report) and not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"kept {workdir} (repository, server logs)")
    return report


def passed(report: dict[str, Any]) -> bool:
    a = report.get("audit", {})
    return (not report.get("unexpected") and not report.get("client_errors") and not report.get("stuck_clients")
            and all(run["exit_code"] == 0 for run in report.get("gc_runs", []))
            and a.get("lost", 1) == 0 and a.get("wrong", 1) == 0 and a.get("extra_entries", 1) == 0
            and a.get("missing_entries", 1) == 0 and report["check"]["exit_code"] == 0)


def print_report(report: dict[str, Any]) -> None:
    out = sys.stdout
    print(f"\nsoak: {report['clients']} clients, {report['users']} users, {report['load_seconds']} s of load "
          f"({report['wall_seconds']} s until the last operation ended), files up to {report['max_size_mib']} MiB",
          file=out)
    print(f"requests: {report['requests']} ({report['requests_per_s']}/s), operations {report['operations']}, "
          f"uploaded {report['upload_mib']} MiB, downloaded {report['download_mib']} MiB", file=out)
    print(f"\n{'request':<18} {'count':>7} {'p50 ms':>9} {'p99 ms':>9}  statuses", file=out)
    for row in report["methods"]:
        statuses = " ".join(f"{s}:{n}" for s, n in row["statuses"].items())
        print(f"{row['label']:<18} {row['count']:>7} {row['p50_ms']:>9} {row['p99_ms']:>9}  {statuses}", file=out)
    errors: dict[int, int] = {}
    for row in report["methods"]:
        for status, n in row["statuses"].items():
            if int(status) >= 400 or int(status) == 0:
                errors[int(status)] = errors.get(int(status), 0) + n
    print(f"\nerrors by status (all, expected ones included): {errors or 'none'}", file=out)
    print(f"requests cut off on purpose (no answer): {report['cut_requests']}", file=out)
    print(f"unexpected: {report['unexpected'] or 'none'}", file=out)
    for sample in report["unexpected_samples"][:10]:
        print(f"  {sample}", file=out)
    rss = report["rss_mib"]
    growth = report["rss_growth_after_first_minute"]
    print(f"server RSS MiB: start {rss['start']}, after 1 min {rss.get('after_first_minute', '-')}, "
          f"end {rss['end']}, peak sampled {rss['peak_sampled']}; growth after the first minute "
          f"{'-' if growth is None else f'{100 * growth:.1f} %'}", file=out)
    for run in report["gc_runs"]:
        print(f"gc while serving: exit {run['exit_code']} in {run['seconds']} s: {run['output']}", file=out)
    a = report.get("audit", {})
    print(f"audit after restart: {a.get('files')} files ({a.get('bytes', 0) / MiB:.1f} MiB) read back; "
          f"lost {a.get('lost')}, wrong {a.get('wrong')}, entries that should not exist {a.get('extra_entries')}, "
          f"missing from listings {a.get('missing_entries')}, left out as uncertain {a.get('uncertain')}", file=out)
    for problem in a.get("problems", [])[:10]:
        print(f"  {problem}", file=out)
    check = report["check"]
    print(f"check --read-data: exit {check['exit_code']} in {check['seconds']} s: {' / '.join(check['output'])}",
          file=out)
    print(f"server log: {report['server_log']}", file=out)
    for line in report["stats"]:
        print(f"  {line}", file=out)
    print(f"\nresult: {'PASS' if passed(report) else 'FAIL'}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration in minutes (10)")
    parser.add_argument("--seconds", type=float, help="load duration in seconds (overrides --minutes)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--max-size-mib", type=int, default=64, help="largest file (64 MiB)")
    parser.add_argument("--gc-every", type=float, default=60.0,
                        help="seconds between gc runs during the load (0: none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", help="directory for the repository and logs (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (always kept on failure)")
    parser.add_argument("--json", help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    report = run(args)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
