"""Writer process for the crash test (tests/core/test_core_crash.py); killed with SIGKILL.

Usage: ``python tests/crash_writer.py REPO_DIR SEED [THREADS]``

Opens the repository in ``rw`` mode and, from THREADS threads, writes, overwrites and
deletes files forever. Protocol on stdout, one flushed line per event::

    READY
    BEGIN <path> <sha256>   a write of that content to path starts
    ACK <path> <sha256>     commit() returned: the content must survive a crash
    BEGIN-DEL <path>        a delete starts
    ACK-DEL <path>          delete() returned: the file must stay gone

Paths are unique per thread, so each path's events are ordered in the output.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading

os.environ.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")

from davbackup.repository import Repository  # noqa: E402

PASSPHRASE = "correct horse battery staple"
USER = "alice"

_print_lock = threading.Lock()


def emit(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def content(rng: random.Random, previous: list[bytes]) -> bytes:
    roll = rng.random()
    if previous and roll < 0.15:
        return rng.choice(previous)  # identical content: pure dedup
    if previous and roll < 0.3:
        base = rng.choice(previous)  # an edit of earlier content: partial dedup
        pos = rng.randrange(len(base) + 1)
        return base[:pos] + rng.randbytes(rng.randrange(1, 2000)) + base[pos:]
    size = rng.choice([0, 1, 100, 5000, 50_000, 200_000, 700_000, 2_000_000])
    size = rng.randrange(size + 1)
    if rng.random() < 0.3:
        return b"".join(b"log line %d\n" % rng.randrange(10**6) for _ in range(size // 12 + 1))[:size]
    return rng.randbytes(size)


def worker(repo: Repository, seed: int, tid: int) -> None:
    rng = random.Random(seed * 1000 + tid)
    ns = repo.namespace(USER)
    previous: list[bytes] = []
    live: list[str] = []
    i = 0
    while True:
        i += 1
        if live and rng.random() < 0.1:
            path = live.pop(rng.randrange(len(live)))
            emit(f"BEGIN-DEL {path}")
            ns.delete(path)
            emit(f"ACK-DEL {path}")
            continue
        if live and rng.random() < 0.2:
            path = rng.choice(live)  # overwrite
        else:
            path = f"/s{seed}-t{tid}-{i}.bin"
            live.append(path)
        data = content(rng, previous)
        previous = (previous + [data])[-8:]
        digest = hashlib.sha256(data).hexdigest()
        emit(f"BEGIN {path} {digest}")
        pending = ns.open_write(path)
        view = memoryview(data)
        step = rng.choice([4096, 65536, 1 << 20])
        for start in range(0, len(data), step):
            pending.write(view[start : start + step])
        pending.commit(expected_size=len(data))
        emit(f"ACK {path} {digest}")


def main() -> None:
    repo_dir, seed = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    repo = Repository.open(repo_dir, PASSPHRASE)
    emit("READY")
    workers = [threading.Thread(target=worker, args=(repo, seed, t), daemon=True) for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


if __name__ == "__main__":
    main()
