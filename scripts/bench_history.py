#!/usr/bin/env python3
"""What a new version costs: catalog and pack growth when a large file changes a little.

Usage::

    python scripts/bench_history.py [--size MiB] [--region MiB] [--keep]

Stores a file of ``--size`` MiB (default 4096, generated with a keyed BLAKE3 XOF so it
never sits in memory), then uploads it again whole with one ``--region`` MiB region
(default 1) in the middle rewritten, as a client re-uploading an edited file would.
It prints how much the catalog (SQLite file after a WAL checkpoint) and the packs grew
for the second version, next to the baseline measured in the same run: the same chunk
list stored flat, one row per chunk, as schema 1 did (a ``version_chunks`` table with
its index, in a scratch database). Targets (issue "History", cost): catalog growth
<= 64 KiB, pack growth <= 4 MiB, for 4 GiB and 1 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import blake3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")

from davbackup.repository import Repository  # noqa: E402

MiB = 1024 * 1024
PIECE = 4 * MiB


def stream(size: int, region: tuple[int, int] | None) -> "list[bytes]":
    base = blake3.blake3(b"bench-history base")
    other = blake3.blake3(b"bench-history edit")
    pos = 0
    while pos < size:
        n = min(PIECE, size - pos)
        data = bytearray(base.digest(length=n, seek=pos))
        if region is not None:
            lo, hi = max(region[0], pos), min(region[1], pos + n)
            if lo < hi:
                data[lo - pos : hi - pos] = other.digest(length=hi - lo, seek=lo)
        yield bytes(data)
        pos += n


def catalog_bytes(repo: Repository) -> int:
    conn = repo.catalog.reader()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return (repo.root / "catalog.sqlite").stat().st_size


def pack_bytes(repo: Repository) -> int:
    return sum(repo.storage.size(n) for n in repo.storage.names())


def upload(repo: Repository, path: str, size: int, region: tuple[int, int] | None) -> float:
    ns = repo.namespace("bench")
    start = time.perf_counter()
    pending = ns.open_write(path)
    for piece in stream(size, region):
        pending.write(piece)
    pending.commit()
    return time.perf_counter() - start


def flat_baseline(repo: Repository, scratch: Path) -> int:
    """Bytes the second version's chunk list takes stored flat (schema 1's layout)."""
    rows = repo.catalog.reader().execute(
        "SELECT offset, length, chunk_id FROM version_chunks WHERE version_id ="
        " (SELECT max(id) FROM versions) ORDER BY offset"
    ).fetchall()
    db = scratch / "flat.sqlite"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE version_chunks(version_id INTEGER NOT NULL, offset INTEGER NOT NULL,"
        " length INTEGER NOT NULL, chunk_id BLOB NOT NULL, PRIMARY KEY (version_id, offset)) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX version_chunks_by_chunk ON version_chunks(chunk_id)")
    conn.commit()
    empty = db.stat().st_size
    conn.executemany("INSERT INTO version_chunks VALUES (2, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return db.stat().st_size - empty, len(rows)  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="file size in MiB (default 4096)")
    parser.add_argument("--region", type=int, default=1, help="rewritten region in MiB (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    size, region_len = args.size * MiB, args.region * MiB
    scratch = ROOT / ".bench-tmp" / f"history-{os.getpid()}"
    scratch.mkdir(parents=True)
    try:
        repo = Repository.init(scratch / "repo", "bench passphrase")
        repo.users.add("bench", "bench-password-1")
        t1 = upload(repo, "/big.bin", size, None)
        growth = []
        for frac in (1 / 3, 1 / 2, 2 / 3):  # one new version per position, each vs the original
            cat1, packs1 = catalog_bytes(repo), pack_bytes(repo)
            start = int(size * frac)
            t2 = upload(repo, "/big.bin", size, (start, start + region_len))
            growth.append((catalog_bytes(repo) - cat1, pack_bytes(repo) - packs1))
        flat, chunks = flat_baseline(repo, scratch)
        versions = [v.name for v in repo.namespace("bench").history().versions("/big.bin")]
        repo.close()
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"file {args.size} MiB; three new versions, each with {args.region} MiB rewritten at 1/3, 1/2, 2/3,"
          " re-uploaded whole")
    print(f"first upload {size / t1 / 1e6:.0f} MB/s, last re-upload {size / t2 / 1e6:.0f} MB/s;"
          f" versions kept: {len(versions)}")
    for (cat, packs), where in zip(growth, ("1/3", "1/2", "2/3")):
        print(f"  region at {where}: catalog +{cat / 1024:.1f} KiB, packs +{packs / MiB:.2f} MiB")
    worst_cat = max(c for c, _ in growth)
    mean_packs = sum(p for _, p in growth) / len(growth)
    print(f"catalog growth per new version, worst: {worst_cat / 1024:.1f} KiB "
          f"(target <= 64 KiB: {'met' if worst_cat <= 64 * 1024 else 'MISSED'})")
    print(f"  baseline, the same {chunks}-chunk list stored flat (schema 1): {flat / 1024:.1f} KiB "
          f"-> ratio {worst_cat / flat:.3f}x")
    print(f"pack growth per new version, mean: {mean_packs / MiB:.2f} MiB "
          f"(target <= 4 MiB: {'met' if mean_packs <= 4 * MiB else 'MISSED'}); the chunker cuts 256 KiB - 4 MiB"
          " pieces, so a rewritten region re-stores the chunks that cover it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
