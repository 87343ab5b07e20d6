#!/usr/bin/env python3
"""How long `davbackup recover` takes, and how much memory it needs, as a repository grows.

Usage::

    python scripts/bench_recover.py [--files 100000] [--folders 1000] [--versions 5] [--sizes 20000,100000]

For each size in ``--sizes`` (files; folders scale along), a repository is built
through the core API (not HTTP, to save time): one user, ``--folders`` folders, and
every file written ``--versions`` times with small unique contents (one pass per
version; a pass takes seconds, so every version is kept in history). The build disables fsync
(it is a fixture, not what is measured). Then ``gc`` writes a checkpoint and compacts
the journal, 100 more files are written (records after the checkpoint), the catalog
is deleted and ``davbackup recover`` runs as a child process; its wall time and peak
resident memory (``ru_maxrss`` of the child) are printed per size, with the ratio
between sizes: memory flat in the number of files means that ratio stays near 1.
Target (issue 10): <= 60 s for 100,000 files in 1,000 folders with 5 versions each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")

from davbackup.maintenance.gc import collect_garbage  # noqa: E402
from davbackup.repository import Repository  # noqa: E402

PASSPHRASE = "bench-recover passphrase"


def build(root: Path, files: int, folders: int, versions: int) -> float:
    """Returns the seconds the build took."""
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]  # a fixture: durability not measured
    start = time.monotonic()
    try:
        repo = Repository.init(root, PASSPHRASE)
        repo.catalog._writer.execute("PRAGMA synchronous=OFF")
        repo.users.add("alice", "alice-password-1")
        ns = repo.namespace("alice")
        per_folder = max(1, files // folders)
        for d in range(folders):
            ns.mkdir(f"/d{d:04d}")
        for v in range(versions):  # a pass takes seconds: every version lives on in history
            for i in range(files):
                path = f"/d{i // per_folder % folders:04d}/f{i:06d}.txt"
                pending = ns.open_write(path)
                pending.write(f"file {i} version {v}\n".encode())
                pending.commit()
            print(f"  built version {v + 1}/{versions} of {files} files ({time.monotonic() - start:.0f} s)",
                  file=sys.stderr, flush=True)
        repo.close()
    finally:
        os.fsync = real_fsync
    return time.monotonic() - start


def run_recover(root: Path) -> tuple[float, int, str]:
    env = dict(os.environ, DAVBACKUP_PASSPHRASE=PASSPHRASE, PYTHONPATH=str(ROOT))
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "davbackup", "recover", "--repo", str(root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"recover failed:\n{out}")
    return elapsed, usage.ru_maxrss * 1024, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--sizes", default="", help="comma list of file counts (default: --files/5 and --files)")
    parser.add_argument("--workdir", default="/tmp/davbackup-bench-recover")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [args.files // 5, args.files]
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows = []
    for files in sizes:
        folders = max(1, args.folders * files // args.files)
        root = work / f"repo-{files}"
        print(f"building {files} files in {folders} folders x {args.versions} versions", file=sys.stderr)
        built = build(root, files, folders, args.versions)
        with Repository.open(root, PASSPHRASE, mode="admin") as admin:
            collect_garbage(admin, grace_seconds=0)
        with Repository.open(root, PASSPHRASE) as repo:
            ns = repo.namespace("alice")
            for i in range(100):
                pending = ns.open_write(f"/after-{i}.txt")
                pending.write(b"after the checkpoint\n")
                pending.commit()
        catalog = (root / "catalog.sqlite").stat().st_size
        packs = sum(p.stat().st_size for p in (root / "packs").rglob("*.pack"))
        for p in root.glob("catalog.sqlite*"):
            p.unlink()
        elapsed, rss, out = run_recover(root)
        summary = [line for line in out.splitlines() if line.startswith("recover: ") and "users" in line]
        rows.append((files, folders, built, catalog, packs, elapsed, rss, summary))
        if not args.keep:
            shutil.rmtree(root)
    print("| files | folders | versions | build (s) | catalog MiB | packs MiB | recover (s) | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for files, folders, built, catalog, packs, elapsed, rss, _ in rows:
        print(f"| {files:,} | {folders:,} | {args.versions} | {built:.0f} | {catalog / 2**20:.1f} |"
              f" {packs / 2**20:.1f} | {elapsed:.1f} | {rss / 2**20:.0f} |")
    for row in rows:
        for line in row[7]:
            print(f"- {row[0]:,} files: {line}")
    if len(rows) > 1:
        print(f"- peak RSS ratio largest/smallest: {rows[-1][6] / rows[0][6]:.2f}"
              f" for {rows[-1][0] / rows[0][0]:.0f}x the files; time ratio {rows[-1][5] / rows[0][5]:.2f}")
    print(f"- target: recover <= 60 s for 100,000 files x 5 versions; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
