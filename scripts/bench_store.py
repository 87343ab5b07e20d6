#!/usr/bin/env python3
"""Benchmark of the storage engine against a plain file copy, measured in the same run.

Usage::

    python scripts/bench_store.py [--size MiB] [--repeat N] [--quick] [--keep]

Throughput (median of ``--repeat`` runs, MB = 10^6 bytes), each against its baseline:

1. unique ingest     random data into a fresh repository (chunk, hash, encrypt, pack,
                     fsync, commit) vs. writing the same bytes to a plain file + fsync.
2. already stored    the same data again under another name (chunk, hash, index lookup)
                     vs. the same copy + fsync.
3. text ingest       generated log lines (compressible, all chunks unique) vs. copy + fsync
                     of the same text.
4. full read         reading the stored file back in 1 MiB reads, with a cold and a warm
                     page cache, vs. reading the plain file the same way, and vs. copy +
                     fsync (the target ratio is against the copy: "restore beats backup").

Page cache: the machine has plenty of RAM, so everything just written is cached. For the
cold rows, every file involved (the plain file; the repository's packs and catalog) is
fsynced and then dropped from the cache with ``posix_fadvise(POSIX_FADV_DONTNEED)``,
which works without root for clean pages. Warm rows read straight after a full read.
On a VM the host may still cache the disk, so "cold" means "not in this guest's cache".

Memory: a child process per measurement stream-ingests N GiB generated on the fly
(keyed BLAKE3 XOF, never held in memory) and reports its ``VmHWM`` (peak RSS); a
baseline child writes the same generated stream to a plain file. The ratio of the
4 GiB and the 1 GiB peaks shows whether memory is bounded independent of file size.

All data lives under ``.bench-tmp/`` in the repository checkout (the same file system
as the project) and is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import blake3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")  # key-slot KDF only; no effect on throughput

from davbackup.fs import Namespace  # noqa: E402
from davbackup.repository import Repository  # noqa: E402

MiB = 1024 * 1024
PIECE = 1 * MiB  # write and read size, for davbackup and baseline alike
PASSPHRASE = "bench passphrase"
USER, USER_PASSWORD = "bench", "bench-password"

# -- data ------------------------------------------------------------------------------


def generated(size: int, seed: bytes, piece: int = PIECE) -> Iterator[bytes]:
    """Pseudo-random bytes from a keyed BLAKE3 XOF, ``piece`` at a time (nothing held)."""
    xof = blake3.blake3(key=blake3.blake3(seed).digest())
    for offset in range(0, size, piece):
        yield xof.digest(length=min(piece, size - offset), seek=offset)


def unique_data(size: int, seed: bytes) -> bytes:
    return b"".join(generated(size, seed, 64 * MiB))


def text_data(size: int) -> bytes:
    """Web-server-like log lines; a block number in every line keeps all chunks unique."""
    import random

    rng = random.Random(1)
    paths = [b"/", b"/index.html", b"/api/v1/items", b"/static/app.js", b"/backup/photos/IMG_%04d.jpg"]
    agents = [b"Mozilla/5.0 (X11; Linux x86_64)", b"rclone/v1.66", b"curl/8.5.0", b"davfs2/1.7"]
    lines = []
    for i in range(40_000):
        path = rng.choice(paths)
        if b"%" in path:
            path = path % rng.randrange(10_000)
        lines.append(
            b'10.%d.%d.%d - - [01/Jun/2024:12:%02d:%02d +0000] "GET %s HTTP/1.1" %d %d "-" "%s" blk=BLKXXXXXX\n'
            % (rng.randrange(256), rng.randrange(256), rng.randrange(256), i // 60 % 60, i % 60,
               path, rng.choice([200, 200, 200, 304, 404]), rng.randrange(100_000), rng.choice(agents))
        )
    template = b"".join(lines)
    out = bytearray()
    block = 0
    while len(out) < size:
        out += template.replace(b"BLKXXXXXX", b"%09d" % block)
        block += 1
    return bytes(out[:size])


# -- operations --------------------------------------------------------------------------


def pieces(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(data), PIECE):
        yield view[start : start + PIECE]


def plain_write(path: Path, chunks: Iterator[bytes | memoryview]) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    n = 0
    try:
        for piece in chunks:
            n += os.write(fd, piece)
        os.fsync(fd)
    finally:
        os.close(fd)
    return n


def plain_read(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    n = 0
    try:
        while piece := os.read(fd, PIECE):
            n += len(piece)
    finally:
        os.close(fd)
    return n


def dav_write(ns: Namespace, path: str, chunks: Iterator[bytes | memoryview]) -> int:
    pending = ns.open_write(path)
    for piece in chunks:
        pending.write(piece)
    return pending.commit().size


def dav_read(ns: Namespace, path: str) -> int:
    n = 0
    with ns.open_read(path) as reader:
        while piece := reader.read(PIECE):
            n += len(piece)
    return n


def drop_cache(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def repo_files(repo_dir: Path) -> list[Path]:
    return [p for p in repo_dir.rglob("*") if p.is_file()]


def timed(fn: Callable[[], int]) -> float:
    """MB/s (wall clock) of one call of ``fn``, which returns the bytes it handled.

    The CPU time this process spent (user + system) per GiB is kept in ``last_cpu``:
    unlike wall-clock rates it hardly changes when other processes share the cores.
    """
    global last_cpu
    r0, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    n = fn()
    elapsed = time.perf_counter() - start
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    last_cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * (1 << 30) / n
    return n / 1e6 / elapsed


last_cpu = 0.0


def new_repo(directory: Path) -> Repository:
    shutil.rmtree(directory, ignore_errors=True)
    repo = Repository.init(directory, PASSPHRASE)
    repo.users.add(USER, USER_PASSWORD)
    return repo


# -- throughput ----------------------------------------------------------------------------


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=dict)

    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)
        self.cpu.setdefault(key, []).append(last_cpu)

    def cpu_median(self, key: str) -> float:
        return statistics.median(self.cpu[key])

    def median(self, key: str) -> float:
        return statistics.median(self.values[key])

    def spread(self, key: str) -> str:
        v = self.values[key]
        return f"{min(v):.0f}-{max(v):.0f}" if len(v) > 1 else ""


def throughput(work: Path, size: int, repeat: int) -> tuple[Samples, dict[str, float]]:
    print(f"generating {size // MiB} MiB of random and of text data ...", flush=True)
    data = unique_data(size, b"bench-unique")
    text = text_data(size)
    samples = Samples()
    info: dict[str, float] = {}
    plain, plain_text, repo_dir = work / "plain.bin", work / "plain.txt", work / "repo"
    for rep in range(repeat):
        print(f"run {rep + 1}/{repeat} ...", flush=True)
        # interleave baseline and davbackup so that disk drift hits both alike
        samples.add("copy", timed(lambda: plain_write(plain, pieces(data))))
        repo = new_repo(repo_dir)
        try:
            ns = repo.namespace(USER)
            samples.add("unique", timed(lambda: dav_write(ns, "/unique.bin", pieces(data))))
            samples.add("copy", timed(lambda: plain_write(plain, pieces(data))))
            samples.add("stored", timed(lambda: dav_write(ns, "/again.bin", pieces(data))))
            samples.add("copy_text", timed(lambda: plain_write(plain_text, pieces(text))))
            before = sum(repo.storage.size(n) for n in repo.storage.names())
            samples.add("text", timed(lambda: dav_write(ns, "/log.txt", pieces(text))))
            after = sum(repo.storage.size(n) for n in repo.storage.names())
            info["text_stored_share"] = (after - before) / len(text)
            info["unique_stored_share"] = before / len(data)

            drop_cache([plain])
            samples.add("read_plain_cold", timed(lambda: plain_read(plain)))
            repo.chunks.close()  # fsync and seal packs so that their pages are clean
            drop_cache(repo_files(repo_dir))
            samples.add("read_cold", timed(lambda: dav_read(ns, "/unique.bin")))
            samples.add("read_warm", timed(lambda: dav_read(ns, "/unique.bin")))
            samples.add("read_plain_warm", timed(lambda: plain_read(plain)))
            assert dav_read(ns, "/again.bin") == size
        finally:
            repo.close()
            shutil.rmtree(repo_dir, ignore_errors=True)
    plain.unlink(missing_ok=True)
    plain_text.unlink(missing_ok=True)
    return samples, info


# -- memory ---------------------------------------------------------------------------------


def child_main(kind: str, size: int, directory: Path) -> None:
    """Runs in a child process: ingest a generated stream, report peak RSS as JSON."""
    start = time.perf_counter()
    if kind == "plain":
        directory.mkdir(parents=True, exist_ok=True)
        n = plain_write(directory / "plain.bin", generated(size, b"bench-memory"))
    else:
        repo = new_repo(directory)
        try:
            n = dav_write(repo.namespace(USER), "/stream.bin", generated(size, b"bench-memory"))
        finally:
            repo.close()
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"bytes": n, "seconds": seconds, "hwm_kib": hwm}))


def run_child(kind: str, size: int, directory: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(size), str(directory)],
        check=True, capture_output=True, text=True,
    )
    shutil.rmtree(directory, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------


def report(samples: Samples, info: dict[str, float], memory: dict[str, dict[str, float]],
           size: int, mem_sizes: tuple[int, int]) -> None:
    m = samples.median
    cpu = samples.cpu_median
    rows = [
        ("unique ingest", "unique", "copy", ">= 0.70"),
        ("already-stored ingest", "stored", "copy", ">= 3.00"),
        (f"text ingest (stored {info['text_stored_share']:.0%})", "text", "copy_text", ""),
        ("full read, cold cache", "read_cold", "copy", ">= 3.00"),
        ("full read, warm cache", "read_warm", "copy", ""),
        ("full read, cold: vs plain read", "read_cold", "read_plain_cold", ""),
        ("full read, warm: vs plain read", "read_warm", "read_plain_warm", ""),
    ]
    print()
    print(f"davbackup storage benchmark: {size // MiB} MiB per measurement, median of "
          f"{len(samples.values['unique'])} runs, {PIECE // MiB} MiB writes/reads, MB = 10^6 bytes;")
    print("CPU = user+system seconds of this process per GiB (robust when other processes share the cores)")
    print(f"{'measurement':32} {'davbackup':>9} {'CPU':>5} {'baseline':>9} {'CPU':>5} {'ratio':>6}  "
          f"{'target':14} {'baseline is':12} runs (MB/s)")
    for label, key, base_key, target in rows:
        ratio = m(key) / m(base_key)
        verdict = ""
        if target:
            verdict = "ok" if ratio >= float(target.split()[1]) else "MISSED"
        kind = "copy+fsync" if base_key.startswith("copy") else "plain read"
        print(f"{label:32} {m(key):9.0f} {cpu(key):5.2f} {m(base_key):9.0f} {cpu(base_key):5.2f} {ratio:6.2f}  "
              f"{target + ' ' + verdict:14} {kind:12} {samples.spread(key)} vs {samples.spread(base_key)}")
    print(f"random data is stored at {info['unique_stored_share']:.1%} of its size")
    print()
    small, big = mem_sizes
    print(f"{'peak RSS (VmHWM), stream ingest':32} {'davbackup':>10} {'plain':>10} {'MB/s':>6}")
    for n in (small, big):
        d, p = memory[f"dav{n}"], memory[f"plain{n}"]
        print(f"{f'{n / 1024:g} GiB from a generator':32} {d['hwm_kib'] / 1024:6.1f} MiB {p['hwm_kib'] / 1024:6.1f} MiB "
              f"{d['bytes'] / 1e6 / d['seconds']:6.0f}")
    ratio = memory[f"dav{big}"]["hwm_kib"] / memory[f"dav{small}"]["hwm_kib"]
    verdict = "ok" if ratio <= 1.10 else "MISSED"
    print(f"{'ratio ' + f'{big / 1024:g} GiB / {small / 1024:g} GiB':32} {ratio:10.3f} {'':10} {'':6}  "
          f"target <= 1.10 {verdict}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB per throughput measurement (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput measurement (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    parser.add_argument("--keep", action="store_true", help="keep .bench-tmp/ for inspection")
    args = parser.parse_args()
    size = (32 if args.quick else args.size) * MiB
    repeat = 1 if args.quick else args.repeat
    mem_sizes = (64, 256) if args.quick else (1024, 4096)  # MiB

    work = ROOT / ".bench-tmp" / f"store-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        samples, info = throughput(work, size, repeat)
        memory: dict[str, dict[str, float]] = {}
        for n in mem_sizes:
            print(f"memory: stream-ingesting {n} MiB in a child process ...", flush=True)
            memory[f"plain{n}"] = run_child("plain", n * MiB, work / "mem-plain")
            memory[f"dav{n}"] = run_child("dav", n * MiB, work / "mem-repo")
        report(samples, info, memory, size, mem_sizes)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            try:
                (ROOT / ".bench-tmp").rmdir()
            except OSError:
                pass


if __name__ == "__main__":
    main()
