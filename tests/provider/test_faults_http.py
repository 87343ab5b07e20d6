"""Fault injection against a real server: every write path under a failing append,
fsync or catalog commit (no space, I/O error) and under delays.

For each case: the answer is 507 for a full disk and 500 (with a traceback in the
server log) for an I/O error; a refused write changed nothing; an acknowledged one
is there; the server stays up; once the fault is cleared the same write works
without a restart. At the end the server is killed and restarted, every
acknowledged file is read back, and ``check --read-data`` must be clean.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.fault_fixtures import FaultyServer, faulty_server
from tests.resume_fixtures import sha256_b64
from tests.server_fixtures import davbackup

MiB = 1024 * 1024
SABRE = "application/x-sabredav-partialupdate"
PARTIAL = "application/partial-upload"
PROP_NS = "urn:davbackup-fault-test"


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyServer]:
    with faulty_server(tmp_path_factory.mktemp("faults")) as fs:
        yield fs


@dataclass
class Case:
    """One write path: ``act`` runs it (under the fault); ``effect`` says whether its
    change is visible (True), absent (False); ``data`` whether it writes pack data."""

    name: str
    act: Callable[[requests.Session, str, str], requests.Response]
    effect: Callable[[requests.Session, str, str], bool]
    data: bool
    ok: tuple[int, ...]


def _put(s: requests.Session, url: str, body: bytes, **headers: str) -> requests.Response:
    return s.put(url, data=body, headers=headers, timeout=60)


def _content(s: requests.Session, url: str) -> bytes | None:
    r = s.get(url, timeout=60)
    return r.content if r.status_code == 200 else None


def _unique(size: int) -> bytes:
    return os.urandom(size)


# What each case writes is derived from the folder name, so ``effect`` can tell.
ORIGINAL = 3 * MiB + 12345


def _data(base: str, tag: str, size: int) -> bytes:
    import hashlib

    seed = hashlib.sha256(f"{base}/{tag}".encode()).digest()
    block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(2048))
    return (block * (size // len(block) + 1))[:size]


def act_put_new(s, url, base):
    return _put(s, f"{url}/new.bin", _data(base, "new", 2 * MiB + 7))


def effect_put_new(s, url, base):
    return _content(s, f"{url}/new.bin") == _data(base, "new", 2 * MiB + 7)


def act_put_replace(s, url, base):
    return _put(s, f"{url}/a.bin", _data(base, "replace", MiB + 3))


def effect_put_replace(s, url, base):
    return _content(s, f"{url}/a.bin") == _data(base, "replace", MiB + 3)


def act_range_put(s, url, base):
    data = _data(base, "range", 2 * MiB)
    return _put(s, f"{url}/range.bin", data, **{"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}",
                                               "Repr-Digest": f"sha-256=:{sha256_b64(data)}:"})


def effect_range_put(s, url, base):
    return _content(s, f"{url}/range.bin") == _data(base, "range", 2 * MiB)


def act_sabredav(s, url, base):
    return s.patch(f"{url}/a.bin", data=_data(base, "patch", MiB), timeout=60,
                   headers={"Content-Type": SABRE, "X-Update-Range": "append"})


def effect_sabredav(s, url, base):
    return _content(s, f"{url}/a.bin") == _data(base, "a", ORIGINAL) + _data(base, "patch", MiB)


def act_ietf(s, url, base):
    data = _data(base, "ietf", 2 * MiB)
    return s.post(f"{url}/ietf.bin", data=data, timeout=60, headers={
        "Upload-Complete": "?1", "Upload-Draft-Interop-Version": "8",
        "Repr-Digest": f"sha-256=:{sha256_b64(data)}:"})


def effect_ietf(s, url, base):
    return _content(s, f"{url}/ietf.bin") == _data(base, "ietf", 2 * MiB)


def act_mkcol(s, url, base):
    return s.request("MKCOL", f"{url}/sub", timeout=60)


def effect_mkcol(s, url, base):
    return s.request("PROPFIND", f"{url}/sub", headers={"Depth": "0"}, timeout=60).status_code == 207


def act_copy(s, url, base):
    return s.request("COPY", f"{url}/a.bin", headers={"Destination": f"{url}/copy.bin"}, timeout=60)


def effect_copy(s, url, base):
    return _content(s, f"{url}/copy.bin") == _data(base, "a", ORIGINAL)


def act_move(s, url, base):
    return s.request("MOVE", f"{url}/a.bin", headers={"Destination": f"{url}/moved.bin"}, timeout=60)


def effect_move(s, url, base):
    moved = _content(s, f"{url}/moved.bin") == _data(base, "a", ORIGINAL)
    assert moved == (s.head(f"{url}/a.bin", timeout=60).status_code == 404), "a MOVE half done"
    return moved


def act_delete(s, url, base):
    return s.delete(f"{url}/a.bin", timeout=60)


def effect_delete(s, url, base):
    return s.head(f"{url}/a.bin", timeout=60).status_code == 404


def act_proppatch(s, url, base):
    body = (f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:T="{PROP_NS}"><D:set><D:prop>'
            f"<T:note>{base}</T:note></D:prop></D:set></D:propertyupdate>")
    return s.request("PROPPATCH", f"{url}/a.bin", data=body.encode(), timeout=60,
                     headers={"Content-Type": "application/xml"})


def effect_proppatch(s, url, base):
    body = (f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:T="{PROP_NS}"><D:prop><T:note/></D:prop>'
            "</D:propfind>")
    r = s.request("PROPFIND", f"{url}/a.bin", data=body.encode(), headers={"Depth": "0"}, timeout=60)
    return f">{base}<" in r.text


LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b"<D:locktype><D:write/></D:locktype><D:owner>fault test</D:owner></D:lockinfo>")


def act_lock(s, url, base):
    return s.request("LOCK", f"{url}/a.bin", data=LOCK_BODY, timeout=60,
                     headers={"Timeout": "Second-60", "Content-Type": "application/xml"})


def effect_lock(s, url, base):
    r = s.request("PROPFIND", f"{url}/a.bin", headers={"Depth": "0"}, timeout=60,
                  data=b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/>'
                       b"</D:prop></D:propfind>")
    return "opaquelocktoken" in r.text


CASES = [
    Case("PUT new", act_put_new, effect_put_new, True, (201,)),
    Case("PUT replace", act_put_replace, effect_put_replace, True, (204,)),
    Case("range PUT", act_range_put, effect_range_put, True, (201,)),
    Case("PATCH sabredav", act_sabredav, effect_sabredav, True, (204,)),
    Case("IETF upload", act_ietf, effect_ietf, True, (201,)),
    Case("MKCOL", act_mkcol, effect_mkcol, False, (201,)),
    Case("COPY", act_copy, effect_copy, False, (201,)),
    Case("MOVE", act_move, effect_move, False, (201,)),
    Case("DELETE", act_delete, effect_delete, False, (204,)),
    Case("PROPPATCH", act_proppatch, effect_proppatch, False, (207,)),
    Case("LOCK", act_lock, effect_lock, False, (200,)),
]

#: (rule, expected status); "sync EIO" is a failed fsync
FAULTS = [
    ({"op": "append", "error": "ENOSPC"}, 507),
    ({"op": "append", "error": "EIO"}, 500),
    ({"op": "sync", "error": "EIO"}, 500),
    ({"op": "commit", "error": "ENOSPC"}, 507),
    ({"op": "commit", "error": "EIO"}, 500),
]


#: the metadata journal's packs alone (DESIGN.md §20.2): every write that changes the
#: catalog's durable tables (all but LOCK) must be refused and leave no trace
JOURNAL_FAULTS = [
    ({"op": "append", "kind": "journal", "error": "ENOSPC"}, 507),
    ({"op": "append", "kind": "journal", "error": "EIO"}, 500),
    ({"op": "sync", "kind": "journal", "error": "EIO"}, 500),
]


def _params():
    for case in CASES:
        for rule, status in FAULTS:
            if case.data or rule["op"] == "commit":
                yield pytest.param(case, rule, status, id=f"{case.name}-{rule['op']}-{rule['error']}")
        for rule, status in JOURNAL_FAULTS:
            if case.name != "LOCK":
                yield pytest.param(case, rule, status, id=f"{case.name}-journal-{rule['op']}-{rule['error']}")


def _prepare(faulty: FaultyServer, s: requests.Session) -> tuple[str, str]:
    base = f"/faults-{uuid.uuid4().hex[:10]}"
    url = faulty.server.url + base
    assert s.request("MKCOL", url, timeout=60).status_code == 201
    assert _put(s, f"{url}/a.bin", _data(base, "a", ORIGINAL)).status_code == 201
    faulty.ledger[f"{base}/a.bin"] = ("alice", _data(base, "a", ORIGINAL))
    return url, base


def _note(faulty: FaultyServer, s: requests.Session, url: str, base: str) -> None:
    """Record the files of the folder as they are now, for the final read-back."""
    for name in ("a.bin", "new.bin", "range.bin", "ietf.bin", "copy.bin", "moved.bin"):
        body = _content(s, f"{url}/{name}")
        key = f"{base}/{name}"
        if body is None:
            faulty.ledger.pop(key, None)
        else:
            faulty.ledger[key] = ("alice", body)


@pytest.mark.parametrize("case, rule, status", list(_params()))
def test_write_path_under_fault(faulty: FaultyServer, case: Case, rule: dict, status: int) -> None:
    s = faulty.server.session("alice")
    url, base = _prepare(faulty, s)
    log_before = len(faulty.server.log())
    with faulty.faults(rule):
        r = case.act(s, url, base)
        if case.name == "PROPPATCH":  # RFC 4918: 207, the status is per property
            assert r.status_code == 207 and f"HTTP/1.1 {status} " in r.text, (r.status_code, r.text)
        else:
            assert r.status_code == status, (r.status_code, r.text)
        assert not case.effect(s, url, base), f"{case.name} refused with {r.status_code} but took effect"
    if status == 500:
        new_log = faulty.server.log()[log_before:]
        assert "Traceback" in new_log and "injected fault" in new_log, new_log[-3000:]
    # the server is up and the same write works now, without a restart
    assert s.request("OPTIONS", faulty.server.url + "/", timeout=10).status_code == 200
    r = case.act(s, url, base)
    assert r.status_code in case.ok, (r.status_code, r.text)
    assert case.effect(s, url, base)
    _note(faulty, s, url, base)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_write_path_under_delays(faulty: FaultyServer, case: Case) -> None:
    """Slow appends, fsyncs and commits make writes slow, not wrong."""
    s = faulty.server.session("alice")
    url, base = _prepare(faulty, s)
    with faulty.faults({"op": "*", "delay": 0.05}):
        started = time.monotonic()
        r = case.act(s, url, base)
        assert r.status_code in case.ok, (r.status_code, r.text)
        assert time.monotonic() - started >= 0.05
    assert case.effect(s, url, base)
    _note(faulty, s, url, base)


def test_resumable_uploads_keep_acknowledged_parts_through_faults(faulty: FaultyServer) -> None:
    """A failed part of a range PUT or an IETF upload loses no part acknowledged before
    it; after the fault the upload goes on from the offset the server reports."""
    s = faulty.server.session("alice")
    url, base = _prepare(faulty, s)
    data = _data(base, "parts", 3 * MiB)
    digest = {"Repr-Digest": f"sha-256=:{sha256_b64(data)}:"}
    r = _put(s, f"{url}/parts.bin", data[:MiB], **{"Content-Range": f"bytes 0-{MiB - 1}/{len(data)}"}, **digest)
    assert r.status_code == 308 and int(r.headers["Upload-Offset"]) == MiB
    r = s.post(f"{url}/ietf-parts.bin", data=data[:MiB], timeout=60, headers={
        "Upload-Complete": "?0", "Upload-Length": str(len(data)), **digest})
    assert r.status_code == 201 and int(r.headers["Upload-Offset"]) == MiB
    location = faulty.server.url + r.headers["Location"]
    for rule, status in FAULTS:
        with faulty.faults(rule):
            r = _put(s, f"{url}/parts.bin", data[MiB:2 * MiB],
                     **{"Content-Range": f"bytes {MiB}-{2 * MiB - 1}/{len(data)}"}, **digest)
            assert r.status_code == status, (rule, r.status_code, r.text)
            r = s.patch(location, data=data[MiB:2 * MiB], timeout=60, headers={
                "Content-Type": PARTIAL, "Upload-Offset": str(MiB), "Upload-Complete": "?0"})
            assert r.status_code == status, (rule, r.status_code, r.text)
        q = _put(s, f"{url}/parts.bin", b"", **{"Content-Range": f"bytes */{len(data)}"}, **digest)
        assert q.status_code == 308 and int(q.headers["Upload-Offset"]) >= MiB, rule
        h = s.head(location, timeout=60)
        assert h.status_code == 204 and int(h.headers["Upload-Offset"]) >= MiB, rule
    offset = int(_put(s, f"{url}/parts.bin", b"", **{"Content-Range": f"bytes */{len(data)}"}, **digest)
                 .headers["Upload-Offset"])
    r = _put(s, f"{url}/parts.bin", data[offset:], **{"Content-Range": f"bytes {offset}-{len(data) - 1}/{len(data)}"},
             **digest)
    assert r.status_code == 201, r.text
    offset = int(s.head(location, timeout=60).headers["Upload-Offset"])
    r = s.patch(location, data=data[offset:], timeout=60, headers={
        "Content-Type": PARTIAL, "Upload-Offset": str(offset), "Upload-Complete": "?1"})
    assert r.status_code == 201, r.text
    assert _content(s, f"{url}/parts.bin") == data
    assert _content(s, f"{url}/ietf-parts.bin") == data
    _note(faulty, s, url, base)
    faulty.ledger[f"{base}/parts.bin"] = ("alice", data)
    faulty.ledger[f"{base}/ietf-parts.bin"] = ("alice", data)


@pytest.mark.parametrize("rule", [{"op": "append", "error": "ENOSPC"}, {"op": "append", "error": "EIO"},
                                  {"op": "sync", "error": "EIO"}, {"op": "read", "error": "EIO"},
                                  {"op": "commit", "error": "ENOSPC"}, {"op": "commit", "error": "EIO"}],
                         ids=lambda r: f"{r['op']}-{r['error']}")
def test_gc_under_fault(faulty: FaultyServer, rule: dict) -> None:
    """gc beside the running server: a fault makes it stop with a clear error (no
    traceback, exit code of the error), the repository stays consistent, and the next
    gc without the fault works."""
    s = faulty.server.session("alice")
    url, base = _prepare(faulty, s)
    # garbage for gc to rewrite or drop: overwritten versions in packs with live data
    for i in range(4):
        assert _put(s, f"{url}/g{i}.bin", _unique(MiB)).status_code == 201
    for i in range(4):
        assert s.delete(f"{url}/g{i}.bin").status_code == 204
    args = ["gc", "--repo", str(faulty.server.repo), "--grace", "0", "--threshold", "1.0"]
    with faulty.faults(rule):
        result = davbackup_status(args, faulty.env())
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert "injected fault" in result.stderr or "no space" in result.stderr, result.stderr
    ok = davbackup_status(args, faulty.env())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    check = davbackup_status(["check", "--repo", str(faulty.server.repo), "--read-data"], faulty.env())
    assert check.returncode == 0, check.stdout + check.stderr


def davbackup_status(args: list[str], env: dict[str, str]):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "davbackup", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_zz_acknowledged_writes_survive_a_crash_and_check_is_clean(faulty: FaultyServer) -> None:
    """Runs last in this module: kill -9, restart, read every acknowledged file back."""
    assert len(faulty.ledger) > 50
    faulty.restart(crash=True)
    s = faulty.server.session("alice")
    for path, (_user, data) in sorted(faulty.ledger.items()):
        assert _content(s, faulty.server.url + path) == data, path
    faulty.server.stop()
    davbackup(["check", "--repo", str(faulty.server.repo), "--read-data"], faulty.env())
