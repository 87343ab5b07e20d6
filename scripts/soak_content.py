"""Deterministic file contents, request bookkeeping and raw cut-off requests for scripts/soak.

A :class:`Content` is named by a seed and a size: its bytes are the AES-256-CTR key
stream of a key derived from the seed, so any byte range can be produced again at
several GB/s without keeping files in memory, and two files with the same seed and
size have the same bytes (which exercises deduplication).
"""

from __future__ import annotations

import base64
import hashlib
import socket
import statistics
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterator

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KiB = 1024
MiB = 1024 * KiB
BLOCK = 1 * MiB


@dataclass(frozen=True)
class Content:
    seed: int
    size: int

    def _key(self) -> bytes:
        return hashlib.sha256(b"davbackup-soak\0%d" % self.seed).digest()

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``offset .. offset+length-1`` (clipped to the size)."""
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        block, skip = divmod(offset, 16)
        encryptor = Cipher(algorithms.AES(self._key()), modes.CTR(block.to_bytes(16, "big"))).encryptor()
        return encryptor.update(bytes(skip + length))[skip:]

    def blocks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        end = self.size if end is None else end
        pos = start
        while pos < end:
            step = min(BLOCK, end - pos)
            yield self.read(pos, step)
            pos += step

    def sha256_b64(self) -> str:
        return _digest(self)


_digests: dict[Content, str] = {}
_digest_lock = threading.Lock()


def _digest(content: Content) -> str:
    with _digest_lock:
        known = _digests.get(content)
    if known is not None:
        return known
    h = hashlib.sha256()
    for block in content.blocks():
        h.update(block)
    value = base64.b64encode(h.digest()).decode()
    with _digest_lock:
        _digests[content] = value
    return value


class Body:
    """A request body streamed from a :class:`Content` range, with a known length
    (``requests`` then sends Content-Length, not chunked encoding)."""

    def __init__(self, content: Content, start: int = 0, end: int | None = None) -> None:
        self.content = content
        self.start = start
        self.end = content.size if end is None else end

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[bytes]:
        return self.content.blocks(self.start, self.end)


def matches(content: Content, chunks: Iterator[bytes], start: int = 0) -> tuple[bool, int]:
    """Compare a response body with the content from ``start``: (equal so far, bytes read)."""
    pos = start
    ok = True
    for chunk in chunks:
        if ok and chunk != content.read(pos, len(chunk)):
            ok = False
        pos += len(chunk)
    return ok, pos - start


# -- statistics ---------------------------------------------------------------------


@dataclass
class Recorder:
    """Every request's label, status and duration; unexpected answers with detail."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    unexpected: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    #: requests cut off on purpose (no answer read), by method
    cuts: Counter = field(default_factory=Counter)

    def record(self, label: str, status: int, seconds: float, *, expected: bool, detail: str = "",
               up: int = 0, down: int = 0) -> None:
        with self.lock:
            self.times[label].append(seconds)
            self.statuses[label][status] += 1
            self.bytes_up += up
            self.bytes_down += down
            if not expected:
                self.unexpected[(label, status)] += 1
                if len(self.samples) < 50:
                    self.samples.append(f"{label} -> {status}: {detail}"[:400])

    def count_cut(self, method: str) -> None:
        with self.lock:
            self.cuts[method] += 1

    def add_down(self, n: int) -> None:
        with self.lock:
            self.bytes_down += n

    def total(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.times.values())

    def table(self) -> list[dict[str, object]]:
        rows = []
        with self.lock:
            for label in sorted(self.times):
                values = sorted(self.times[label])
                rows.append({
                    "label": label,
                    "count": len(values),
                    "p50_ms": round(1000 * statistics.median(values), 1),
                    "p99_ms": round(1000 * values[min(len(values) - 1, int(0.99 * len(values)))], 1),
                    "statuses": dict(sorted(self.statuses[label].items())),
                })
        return rows


# -- raw requests whose body is cut off -------------------------------------------------


def cut_request(port: int, method: str, path: str, auth: str, headers: dict[str, str],
                content: Content, start: int, end: int, cut_after: int) -> None:
    """Send a request announcing ``end - start`` body bytes, send ``cut_after`` of
    them, then drop the connection without reading an answer (a client that died)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Basic {auth}",
             f"Content-Length: {end - start}", "Expect:"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        for block in content.blocks(start, start + cut_after):
            sock.sendall(block)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
