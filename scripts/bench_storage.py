#!/usr/bin/env python3
"""Stored bytes of an 8-version backup corpus: davbackup against restic, in one run.

Usage::

    scripts/bench-storage [--files N] [--image-mib N] [--versions N] [--seed N] [--keep]

The corpus (generated, deterministic for a seed) is what a person backs up every day:

* a source tree of ``--files`` files (default 3,000) in nested folders, mostly
  text-like (words drawn from a vocabulary, so they compress like code and prose),
  one in ten binary (random bytes, incompressible), 40 B to 2 MiB;
* a ``--image-mib`` MiB disk image (default 256): a mix of zero runs, text-like and
  random regions.

Each new version edits 3 % of the text files in the middle, appends to 2 %, deletes
1 %, adds 2 % new files, and rewrites 64 scattered 4 KiB blocks of the image plus one
1 MiB region (a growing log): small changes inside large files are where a chunking
backup re-stores whole chunks for a few KiB changed.

Both tools back up every version: davbackup through its core API, as a sync client
would (changed and new files uploaded whole, deleted ones deleted, into the same
folder, so history keeps the old versions); restic 0.14 (Debian ``restic``, installed
with apt when missing) with ``backup --compression auto`` of the whole tree into a
repository of format version 2. The figures are the bytes on disk of each repository
(davbackup: packs, catalog after a WAL checkpoint, config and keys; restic: the whole
repository directory). Target (issue 12): davbackup <= 0.9x restic after 8 versions.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")

from davbackup.repository import Repository  # noqa: E402

MiB = 1024 * 1024
PIECE = 4 * MiB
IMAGE = "disk.img"
WORDS = [
    "def", "return", "self", "import", "class", "for", "in", "if", "else", "None", "True", "value",
    "data", "path", "the", "of", "and", "to", "a", "is", "that", "with", "as", "file", "version",
    "chunk", "pack", "catalog", "node", "user", "=", "(", ")", ":", "{", "}", "[", "]", "+", "-",
    "0", "1", "2", "42", "1024", "error", "request", "response", "server", "client", "backup",
]
WORDS += [f"name{i}" for i in range(400)] + [f"Word{i}" for i in range(200)]


def text(rng: random.Random, size: int) -> bytes:
    """About ``size`` bytes of text-like lines."""
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(2, 14)))
        line = " " * (4 * rng.randint(0, 3)) + line + "\n"
        out.append(line)
        length += len(line)
    return "".join(out).encode()[:size]


def file_size(rng: random.Random, binary: bool) -> int:
    median = 24_000 if binary else 3_000
    return max(40, min(2 * MiB, int(rng.lognormvariate(0, 1.3) * median)))


@dataclass
class Corpus:
    """The working tree of the corpus and how it changes from one version to the next."""

    root: Path
    rng: random.Random
    files: dict[str, bool] = field(default_factory=dict)  # relative path -> binary
    serial: int = 0

    def _new_path(self) -> str:
        self.serial += 1
        depth = self.rng.randint(0, 3)
        folders = [f"dir{self.rng.randint(0, 9)}{chr(97 + self.rng.randint(0, 5))}" for _ in range(depth)]
        binary = self.rng.random() < 0.1
        name = f"f{self.serial}.{'bin' if binary else 'txt'}"
        self.files["/".join([*folders, name])] = binary
        return "/".join([*folders, name])

    def _write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def _fill(self, rel: str) -> None:
        binary = self.files[rel]
        size = file_size(self.rng, binary)
        self._write(rel, self.rng.randbytes(size) if binary else text(self.rng, size))

    def first(self, count: int, image_mib: int) -> set[str]:
        for _ in range(count):
            self._fill(self._new_path())
        with open(self.root / IMAGE, "wb") as out:
            for _ in range(image_mib * 4):  # 256 KiB regions
                kind = self.rng.random()
                if kind < 0.25:
                    out.write(bytes(256 * 1024))
                elif kind < 0.65:
                    out.write(text(self.rng, 256 * 1024))
                else:
                    out.write(self.rng.randbytes(256 * 1024))
        return set(self.files) | {IMAGE}

    def next(self) -> tuple[set[str], set[str]]:
        """Change the tree; return (changed or new paths, deleted paths)."""
        texts = sorted(p for p, binary in self.files.items() if not binary)
        changed: set[str] = set()
        for rel in self.rng.sample(texts, max(1, len(texts) * 3 // 100)):  # edits in the middle
            data = (self.root / rel).read_bytes()
            at = self.rng.randrange(len(data) + 1)
            cut = self.rng.randint(0, 200)
            self._write(rel, data[:at] + text(self.rng, self.rng.randint(20, 400)) + data[at + cut:])
            changed.add(rel)
        for rel in self.rng.sample(texts, max(1, len(texts) * 2 // 100)):  # appends
            with open(self.root / rel, "ab") as out:
                out.write(text(self.rng, self.rng.randint(50, 4000)))
            changed.add(rel)
        deleted = set(self.rng.sample(sorted(set(self.files) - changed), max(1, len(self.files) // 100)))
        for rel in deleted:
            (self.root / rel).unlink()
            del self.files[rel]
        for _ in range(max(1, len(self.files) * 2 // 100)):
            rel = self._new_path()
            self._fill(rel)
            changed.add(rel)
        size = (self.root / IMAGE).stat().st_size
        with open(self.root / IMAGE, "r+b") as image:
            for _ in range(64):
                image.seek(self.rng.randrange(size // 4096) * 4096)
                image.write(self.rng.randbytes(4096))
            image.seek(self.rng.randrange((size - MiB) // 4096) * 4096)
            image.write(text(self.rng, MiB))
        changed.add(IMAGE)
        return changed, deleted


def davbackup_sync(repo: Repository, corpus: Path, changed: set[str], deleted: set[str],
                   made: set[str]) -> None:
    ns = repo.namespace("bench")
    for rel in sorted(deleted):
        ns.delete("/backup/" + rel)
    for rel in sorted(changed):
        parts = ["backup", *rel.split("/")[:-1]]
        for i in range(1, len(parts) + 1):
            folder = "/" + "/".join(parts[:i])
            if folder not in made:
                if ns.lookup(folder) is None:
                    ns.mkdir(folder)
                made.add(folder)
        pending = ns.open_write("/backup/" + rel)
        with open(corpus / rel, "rb") as source:
            while piece := source.read(PIECE):
                pending.write(piece)
        pending.commit()


def davbackup_bytes(repo: Repository) -> tuple[int, int]:
    """(total bytes of the repository directory, of which the catalog)."""
    repo.catalog.reader().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = sum(p.stat().st_size for p in repo.root.rglob("*") if p.is_file() and p.name != "reserve")
    catalog = sum(p.stat().st_size for p in repo.root.glob("catalog.sqlite*"))
    return total, catalog


def restic_bin() -> str:
    found = shutil.which("restic")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "restic"], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("restic")
    if found is None:
        raise SystemExit("bench-storage: restic is not installed and apt could not install it")
    return found


def restic(args: list[str], repo: Path, cwd: Path | None = None) -> None:
    env = {**os.environ, "RESTIC_PASSWORD": "bench passphrase", "RESTIC_REPOSITORY": str(repo),
           "RESTIC_CACHE_DIR": str(repo.parent / "restic-cache")}
    subprocess.run([restic_bin(), "--quiet", *args], check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--image-mib", type=int, default=256)
    parser.add_argument("--versions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    scratch = ROOT / ".bench-tmp" / f"storage-{os.getpid()}"
    corpus_dir = scratch / "corpus"
    corpus_dir.mkdir(parents=True)
    corpus = Corpus(corpus_dir, random.Random(args.seed))
    restic_repo = scratch / "restic"
    rows = []
    try:
        repo = Repository.init(scratch / "davbackup", "bench passphrase")
        repo.users.add("bench", "bench-password-1")
        restic(["init", "--repository-version", "2"], restic_repo)
        made: set[str] = set()
        source_total = 0
        t_dav = t_restic = 0.0
        for version in range(1, args.versions + 1):
            if version == 1:
                changed, deleted = corpus.first(args.files, args.image_mib), set()
            else:
                changed, deleted = corpus.next()
            size = tree_bytes(corpus_dir)
            source_total += size
            start = time.perf_counter()
            davbackup_sync(repo, corpus_dir, changed, deleted, made)
            t_dav += time.perf_counter() - start
            start = time.perf_counter()
            restic(["backup", "--compression", "auto", "--host", "bench", "."], restic_repo, cwd=corpus_dir)
            t_restic += time.perf_counter() - start
            dav, catalog = davbackup_bytes(repo)
            rows.append((version, size, len(changed), len(deleted), dav, catalog, tree_bytes(restic_repo)))
            print(f"version {version}: {len(changed)} changed, {len(deleted)} deleted;"
                  f" davbackup {dav / MiB:.1f} MiB, restic {rows[-1][-1] / MiB:.1f} MiB", flush=True)
        repo.close()
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(f"corpus: {args.files} files + a {args.image_mib} MiB image, {args.versions} versions, seed {args.seed};"
          f" {source_total / MiB:.0f} MiB backed up in all")
    print("| version | tree MiB | changed | deleted | davbackup MiB | of which catalog | restic MiB | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for version, size, changed_n, deleted_n, dav, catalog, res in rows:
        print(f"| {version} | {size / MiB:.1f} | {changed_n} | {deleted_n} | {dav / MiB:.1f} | {catalog / MiB:.1f}"
              f" ({catalog / dav:.0%}) | {res / MiB:.1f} | {dav / res:.3f}x |")
    dav, catalog, res = rows[-1][4], rows[-1][5], rows[-1][6]
    print(f"after {args.versions} versions: davbackup {dav / res:.3f}x restic's bytes"
          f" (target <= 0.9x: {'met' if dav <= 0.9 * res else 'MISSED'}); catalog {catalog / dav:.0%} of davbackup's")
    print(f"time to back up all versions: davbackup {t_dav:.1f} s (core API, no HTTP), restic {t_restic:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
