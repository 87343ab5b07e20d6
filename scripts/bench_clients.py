"""The benchmark clients: curl for big bodies, parallel keep-alive sessions for small
ones, PROPFIND timing, and ranged GETs at random offsets (each answer checked)."""

from __future__ import annotations

import base64
import http.client
import random
import re
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

USER, PASSWORD = "bench", "bench-password-1"
_END_RESPONSE = re.compile(rb"</(?:[A-Za-z][\w.-]*:)?response>")


def curl(args: list[str]) -> tuple[int, float, int, int]:
    """Run curl; returns (status, seconds, bytes sent, bytes received) from --write-out."""
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-u", f"{USER}:{PASSWORD}", "-H", "Expect:",
         "-w", "%{http_code} %{time_total} %{size_upload} %{size_download}", *args],
        capture_output=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"curl {args} failed ({out.returncode}): {out.stderr.decode()} {out.stdout[-500:]!r}")
    code, secs, up, down = out.stdout.decode().split()[-4:]
    return int(code), float(secs), int(float(up)), int(float(down))


def curl_put(url: str, path: Path) -> float:
    code, secs, moved, _ = curl(["-T", str(path), "-o", "/dev/null", url])
    if code not in (200, 201, 204) or moved != path.stat().st_size:
        raise RuntimeError(f"PUT {url}: status {code}, {moved} bytes sent")
    return secs


def curl_get(url: str, size: int) -> float:
    code, secs, _, moved = curl(["-o", "/dev/null", url])
    if code != 200 or moved != size:
        raise RuntimeError(f"GET {url}: status {code}, {moved} of {size} bytes")
    return secs


def dd_fsync(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none"], check=True)
    secs = time.perf_counter() - t0
    dst.unlink()
    return secs


def small_puts(base_url: str, bodies: list[bytes], concurrency: int) -> float:
    """PUT each body as folder/fNNNNN.bin with ``concurrency`` keep-alive sessions."""
    folder = base_url + "small/"
    r = requests.request("MKCOL", folder, auth=(USER, PASSWORD), timeout=60)
    if r.status_code not in (201, 405):
        raise RuntimeError(f"MKCOL {folder}: {r.status_code}")
    lock = threading.Lock()
    todo = iter(range(len(bodies)))
    errors: list[str] = []
    start = threading.Barrier(concurrency + 1)

    def worker() -> None:
        session = requests.Session()
        session.auth = (USER, PASSWORD)
        start.wait()
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                break
            resp = session.put(f"{folder}f{i:05d}.bin", data=bodies[i], timeout=120)
            if resp.status_code not in (201, 204):
                errors.append(f"f{i:05d}: {resp.status_code}")
                break
        session.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"small PUTs failed: {errors[:5]}")
    return secs


def propfind(base_url: str, body: bytes, expected: int, runs: int) -> list[float]:
    """Times (s) of ``runs`` PROPFIND Depth 1 on small/, after one warm-up."""
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    headers = {"Depth": "1", "Content-Type": "application/xml"}
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        resp = session.request("PROPFIND", base_url + "small/", data=body, headers=headers, timeout=300)
        content = resp.content
        secs = time.perf_counter() - t0
        if resp.status_code != 207:
            raise RuntimeError(f"PROPFIND: {resp.status_code}")
        n = len(_END_RESPONSE.findall(content))
        if n != expected + 1:
            raise RuntimeError(f"PROPFIND listed {n - 1} members, expected {expected}")
        if i:
            times.append(secs)
    session.close()
    return times


def ranged_gets(url: str, local: Path, count: int, concurrency: int, length: int = 4096,
                seed: int = 12) -> float:
    """``count`` GETs of ``length`` bytes at random offsets of the file at ``url`` (a copy
    of ``local``), ``concurrency`` keep-alive connections; every body is compared with
    the local bytes. Returns the seconds taken."""
    size = local.stat().st_size
    rng = random.Random(seed)
    offsets = [rng.randrange(0, size - length) for _ in range(count)]
    parts = urlsplit(url)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    lock = threading.Lock()
    todo = iter(offsets)
    errors: list[str] = []
    start = threading.Barrier(concurrency + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        with open(local, "rb") as expected:
            start.wait()
            while True:
                with lock:
                    offset = next(todo, None)
                if offset is None:
                    break
                conn.request("GET", parts.path, headers={
                    "Authorization": f"Basic {token}", "Range": f"bytes={offset}-{offset + length - 1}"})
                resp = conn.getresponse()
                body = resp.read()
                expected.seek(offset)
                if resp.status != 206 or body != expected.read(length):
                    errors.append(f"offset {offset}: {resp.status}, {len(body)} bytes")
                    break
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"ranged GETs failed: {errors[:5]}")
    return secs
