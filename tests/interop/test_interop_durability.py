"""A server killed with SIGKILL during concurrent uploads loses no answered upload.

Eight threads PUT random files of 1-8 MiB (new names, and overwrites of their own
earlier files) while the server is killed. Every PUT answered 201/204 is recorded with
the SHA-256 of its body. After a restart on the same repository:

* every answered file reads back with exactly that digest, unless an overwrite of it
  was in flight at the kill, in which case it holds the old or the new body, whole;
* a new file whose PUT was in flight is either absent or complete, never partial;
* no other name appeared;
* ``davbackup check --read-data`` exits 0.

Two rounds (kill, restart, upload more, kill again) exercise recovery of a repository
that has already been through a crash.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from tests.interop_fixtures import MiB, propfind_children, url_of
from tests.server_fixtures import DavServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

THREADS = 8
ANSWERED_BEFORE_KILL = 20
MAX_WAIT_BEFORE_KILL = 30.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Ledger:
    """What the clients know: answered digests and PUTs cut short by the kill."""

    answered: dict[str, str] = field(default_factory=dict)        # path -> sha256
    #: path -> digests it may hold after PUTs cut short by a kill (None: absent)
    interrupted: dict[str, set[str | None]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)            # odd statuses
    lock: threading.Lock = field(default_factory=threading.Lock)


def upload_until_killed(server: DavServer, ledger: Ledger, worker: int, round_: int,
                        stop: threading.Event) -> None:
    rng = random.Random(worker * 1000 + round_)
    session = server.session()
    mine: list[str] = [p for p in ledger.answered if p.startswith(f"/dur/t{worker}/")]
    counter = 0
    while not stop.is_set():
        if mine and rng.random() < 0.3:
            path = rng.choice(mine)
        else:
            path = f"/dur/t{worker}/r{round_}-{counter}.bin"
            counter += 1
        data = os.urandom(rng.randint(1 * MiB, 8 * MiB))
        digest = sha256(data)
        try:
            response = session.put(url_of(server, path), data=data, timeout=120)
        except requests.RequestException:
            with ledger.lock:
                before = ledger.interrupted.get(path, {ledger.answered.get(path)})
                ledger.interrupted[path] = before | {digest}
            return
        with ledger.lock:
            if response.status_code in (201, 204):
                ledger.answered[path] = digest
                ledger.interrupted.pop(path, None)
                if path not in mine:
                    mine.append(path)
            else:
                ledger.unexpected.append(f"PUT {path}: {response.status_code}")


def crash_round(server: DavServer, ledger: Ledger, round_: int) -> None:
    stop = threading.Event()
    before = len(ledger.answered)
    cut_before = sum(len(v) for v in ledger.interrupted.values())
    threads = [threading.Thread(target=upload_until_killed,
                                args=(server, ledger, worker, round_, stop), daemon=True)
               for worker in range(THREADS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + MAX_WAIT_BEFORE_KILL
    while time.monotonic() < deadline:
        with ledger.lock:
            if len(ledger.answered) - before >= ANSWERED_BEFORE_KILL:
                break
        time.sleep(0.05)
    # kill at a moment unrelated to any one request
    time.sleep(random.Random(round_).uniform(0.0, 0.4))
    server.kill()
    stop.set()
    for thread in threads:
        thread.join(timeout=150)
        assert not thread.is_alive(), "an upload thread hung after the kill"
    assert len(ledger.answered) - before > 0, "no upload was answered before the kill"
    assert sum(len(v) for v in ledger.interrupted.values()) > cut_before, (
        "the kill interrupted no upload")


def verify(server: DavServer, ledger: Ledger) -> None:
    session = server.session()
    for path in sorted(set(ledger.answered) | set(ledger.interrupted)):
        response = session.get(url_of(server, path), timeout=120)
        if path in ledger.interrupted:
            acceptable = ledger.interrupted[path]
            if response.status_code == 404:
                assert None in acceptable, f"{path}: answered before a kill, now 404"
                continue
            assert response.status_code == 200, f"{path}: {response.status_code}"
            assert sha256(response.content) in acceptable, (
                f"{path}: after an interrupted PUT it holds none of the bodies sent whole "
                f"({len(response.content)} bytes)")
        else:
            assert response.status_code == 200, (
                f"{path}: answered before the kill, now {response.status_code}")
            assert sha256(response.content) == ledger.answered[path], (
                f"{path}: answered before the kill, content differs "
                f"({len(response.content)} bytes)")
    known = set(ledger.answered) | set(ledger.interrupted)
    for worker in range(THREADS):
        listed = propfind_children(server, f"/dur/t{worker}/")
        strays = {f"/dur/t{worker}/{name}" for name in listed} - known
        assert not strays, f"names nobody uploaded: {sorted(strays)}"


def test_sigkill_during_uploads_loses_no_answered_upload(dav_server: DavServer) -> None:
    server = dav_server
    session = server.session()
    for collection in ["/dur/", *[f"/dur/t{w}/" for w in range(THREADS)]]:
        assert session.request("MKCOL", url_of(server, collection),
                               timeout=30).status_code == 201
    ledger = Ledger()
    for round_ in range(2):
        crash_round(server, ledger, round_)
        server.start()  # same repository, same port
        verify(server, ledger)
    assert not ledger.unexpected, ledger.unexpected

    server.stop()
    check = subprocess.run(
        [sys.executable, "-m", "davbackup", "check", "--read-data", "--repo",
         str(server.repo)],
        capture_output=True, text=True, env=server.env, timeout=240)
    assert check.returncode == 0, f"davbackup check --read-data:\n{check.stdout}\n{check.stderr}"
