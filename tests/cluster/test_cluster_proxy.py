"""Two cluster nodes behind nginx, then behind HAProxy, each configured as
docs/deploy.md says (issue 11).

The proxy balances round robin with no sticky sessions, so consecutive requests of
one client go to alternate nodes; every answer names its node (``X-Upstream``), and
the tests check that the steps of one operation really were served by different
nodes: a range PUT and an IETF upload continued on the other node (also after the
first one was killed: the proxy then sends everything to the survivor), a LOCK taken on
one node and enforced on the other, COPY and MOVE with the public ``https://`` URL
as Destination, and litmus, whose every request may land on either node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.cluster.proxies import Proxy, start_proxy
from tests.cluster_fixtures import Cluster
from tests.interop.test_litmus import SUITES, parse_summaries
from tests.server_fixtures import DavServer

pytestmark = pytest.mark.timeout(600)

LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>proxy test</D:owner></D:lockinfo>"
)


@pytest.fixture(scope="module", params=["nginx", "haproxy"])
def proxy(request: pytest.FixtureRequest, shared_cluster: Cluster,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A proxy in front of the module's two nodes; its tests work below ``proxy.base``."""
    p = start_proxy(request.param, tmp_path_factory.mktemp(request.param), list(shared_cluster.nodes))
    try:
        assert p.session().request("MKCOL", p.base).status_code == 201
        yield p
    finally:
        p.stop()


def _steer(proxy: Proxy, s: requests.Session, target: DavServer) -> None:
    """Make ``target`` the node that round robin picks for ``s``'s next request:
    cheap OPTIONS requests until one was answered by the other node."""
    for _ in range(4):
        if proxy.served_by(s.options(proxy.url + "/")) is not target:
            return
    raise AssertionError(f"{proxy.kind} sent four requests in a row to one node: not round robin")


def _other(proxy: Proxy, node: DavServer) -> DavServer:
    return next(n for n in proxy.nodes.values() if n is not node)


def test_uploads_downloads_copy_and_move_through_the_proxy(proxy: Proxy) -> None:
    s = proxy.session()
    url = proxy.base
    assert s.get(proxy.url + "/.well-known/davbackup-health").text.strip() == "ok"
    assert s.request("MKCOL", url + "/lb").status_code == 201
    big = os.urandom(24 * 1024 * 1024 + 5)
    put = s.put(url + "/lb/big.bin", data=big)  # streamed through (proxy_request_buffering off)
    assert put.status_code == 201, put.text
    writer = proxy.served_by(put)
    reader = _other(proxy, writer)
    _steer(proxy, s, reader)
    got = s.get(url + "/lb/big.bin")
    assert proxy.served_by(got) is reader and got.content == big
    ranged = s.get(url + "/lb/big.bin", headers={"Range": "bytes=10000000-10000099"})
    assert ranged.status_code == 206 and ranged.content == big[10_000_000:10_000_100]
    # COPY and MOVE name their target by the public URL (https, the proxy's host:port)
    copy = s.request("COPY", url + "/lb/big.bin", headers={"Destination": url + "/lb/copy.bin"})
    assert copy.status_code == 201, copy.text
    move = s.request("MOVE", url + "/lb/copy.bin", headers={"Destination": url + "/lb/moved.bin"})
    assert move.status_code == 201, move.text
    for node in proxy.nodes.values():
        direct = node.session()
        assert direct.get(f"{node.url}/{proxy.kind}/lb/moved.bin").content == big
        assert direct.get(f"{node.url}/{proxy.kind}/lb/copy.bin").status_code == 404
    # many small files from parallel clients, spread over both nodes by the proxy
    written: dict[str, bytes] = {}
    served: set[int] = set()
    errors: list[str] = []

    def client(worker: int) -> None:
        c = proxy.session()
        for i in range(12):
            name, body = f"/lb/w{worker}-{i}.txt", os.urandom(3000 + i)
            r = c.put(url + name, data=body)
            if r.status_code == 201:
                written[name] = body
                served.add(proxy.served_by(r).port)
            else:
                errors.append(f"{name}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(written) == 48 and len(served) == 2
    for name, body in written.items():
        assert s.get(url + name).content == body, name


def test_http2_client_through_the_proxy(proxy: Proxy, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The guide's listener speaks HTTP/2 (``listen 443 ssl http2``): curl uploads and
    downloads over it; nginx talks HTTP/1.1 to the nodes."""
    work = tmp_path_factory.mktemp("h2")
    data = os.urandom(6 * 1024 * 1024 + 1)
    (work / "up.bin").write_bytes(data)
    user, password = next(iter(proxy.nodes.values())).auth("alice")
    common = ["curl", "--http2", "--cacert", str(proxy.cert), "-u", f"{user}:{password}", "-sS", "--fail",
              "-w", "%{http_version} %{http_code}"]
    put = subprocess.run([*common, "-o", "/dev/null", "-T", str(work / "up.bin"), proxy.base + "/h2.bin"],
                         capture_output=True, text=True, timeout=120)
    assert put.returncode == 0 and put.stdout == "2 201", (put.stdout, put.stderr)
    get = subprocess.run([*common, "-o", str(work / "down.bin"), proxy.base + "/h2.bin"],
                         capture_output=True, text=True, timeout=120)
    assert get.returncode == 0 and get.stdout == "2 200", (get.stdout, get.stderr)
    assert (work / "down.bin").read_bytes() == data


def test_range_put_second_half_goes_to_the_other_node(proxy: Proxy) -> None:
    s = proxy.session()
    data = os.urandom(7 * 1024 * 1024 + 3)
    total, half = len(data), 4 * 1024 * 1024
    target = proxy.base + "/resumed.bin"
    first = s.put(target, data=data[:half], headers={"Content-Range": f"bytes 0-{half - 1}/{total}"})
    assert first.status_code == 308, first.text
    node_one = proxy.served_by(first)
    node_two = _other(proxy, node_one)
    _steer(proxy, s, node_two)
    ask = s.put(target, data=b"", headers={"Content-Range": f"bytes */{total}"})
    assert ask.status_code == 308 and proxy.served_by(ask) is node_two
    offset = int(ask.headers["Upload-Offset"])
    assert offset == half
    _steer(proxy, s, node_two)
    done = s.put(target, data=data[offset:], headers={"Content-Range": f"bytes {offset}-{total - 1}/{total}"})
    assert done.status_code == 201, done.text
    assert proxy.served_by(done) is node_two
    assert s.get(target).content == data
    assert node_one.session().get(f"{node_one.url}/{proxy.kind}/resumed.bin").content == data


def test_ietf_upload_continues_through_the_proxy_after_its_node_is_killed(proxy: Proxy) -> None:
    s = proxy.session()
    data = os.urandom(5 * 1024 * 1024)
    cut = 2_000_000
    created = s.post(proxy.base + "/ietf.bin", data=data[:cut], headers={
        "Upload-Complete": "?0", "Upload-Draft-Interop-Version": "8", "Upload-Length": str(len(data))})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location.startswith("/"), location
    dead = proxy.served_by(created)
    survivor = _other(proxy, dead)
    dead.kill()  # SIGKILL: the proxy notices by itself and retries on the other node
    for _ in range(3):  # whichever node round robin picks, the survivor answers
        head = s.head(proxy.url + location)
        assert head.status_code == 204 and head.headers["Upload-Offset"] == str(cut), head.headers
        assert proxy.served_by(head) is survivor
    done = s.patch(proxy.url + location, data=data[cut:], headers={
        "Content-Type": "application/partial-upload", "Upload-Offset": str(cut), "Upload-Complete": "?1"})
    assert done.status_code == 201, done.text
    assert proxy.served_by(done) is survivor
    assert s.get(proxy.base + "/ietf.bin").content == data
    # the node comes back on its port, and nginx sends it requests again (fail_timeout)
    dead.start()
    deadline = time.monotonic() + 30
    while proxy.served_by(s.options(proxy.url + "/")) is not dead:
        assert time.monotonic() < deadline, f"{proxy.kind} does not send requests to the restarted node"
        time.sleep(0.2)


def test_lock_through_one_node_is_enforced_through_the_other(proxy: Proxy) -> None:
    s = proxy.session()
    target = proxy.base + "/locked.txt"
    assert s.put(target, data=b"v1").status_code == 201
    lock = s.request("LOCK", target, data=LOCK_BODY,
                     headers={"Content-Type": "application/xml", "Timeout": "Second-600"})
    assert lock.status_code == 200, lock.text
    token = lock.headers["Lock-Token"]
    holder = proxy.served_by(lock)
    other = _other(proxy, holder)
    _steer(proxy, s, other)
    refused = s.put(target, data=b"no token")
    assert refused.status_code == 423 and proxy.served_by(refused) is other
    _steer(proxy, s, other)
    deleted = s.delete(target)
    assert deleted.status_code == 423 and proxy.served_by(deleted) is other
    for node in (holder, other):  # with the token, on either node
        _steer(proxy, s, node)
        with_token = s.put(target, data=f"by {node.port}".encode(), headers={"If": f"({token})"})
        assert with_token.status_code == 204 and proxy.served_by(with_token) is node
    _steer(proxy, s, other)
    unlock = s.request("UNLOCK", target, headers={"Lock-Token": token})
    assert unlock.status_code == 204 and proxy.served_by(unlock) is other
    _steer(proxy, s, holder)
    after = s.put(target, data=b"after unlock")
    assert after.status_code == 204 and proxy.served_by(after) is holder
    assert s.get(target).content == b"after unlock"


@pytest.mark.skipif(shutil.which("litmus") is None, reason="litmus is not installed")
def test_litmus_through_the_proxy(proxy: Proxy) -> None:
    user, password = next(iter(proxy.nodes.values())).auth("alice")
    before = [node.log().count("davbackup.access") for node in proxy.nodes.values()]
    result = subprocess.run(["litmus", proxy.base + "/", user, password], capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    summaries = parse_summaries(output)
    assert set(summaries) == set(SUITES), output
    failures = {suite: s for suite, s in summaries.items() if s[2] or s[1] != s[0]}
    assert not failures, output + proxy.error_log()
    # 104 tests; over TLS litmus skips http's expect100 ("skipping for SSL server")
    assert sum(run for run, _p, _f in summaries.values()) == 103, output
    assert output.count("SKIPPED") == 1 and "expect100............. SKIPPED (skipping for SSL server)" in output
    # round robin spread litmus over both nodes: each answered about half of it
    answered = [node.log().count("davbackup.access") - n for node, n in zip(proxy.nodes.values(), before)]
    assert min(answered) > 0.4 * sum(answered), answered
