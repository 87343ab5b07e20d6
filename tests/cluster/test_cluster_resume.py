"""Uploads whose node dies in the middle of a request body, continued on another node.

Node A receives part of a request body and is then SIGKILLed (no cleanup): what it
had saved by then is whatever its last checkpoint committed to PostgreSQL. The
progress query a client sends next goes to node B and must report exactly that
(the ``received`` of the upload's row, read from the database after the kill), and
the upload must complete from there with the right bytes. A SabreDAV PATCH is one
atomic change: one cut off by A's death changed nothing, and B reports the size the
last complete PATCH left.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg

from tests.cluster_fixtures import Cluster, Node
from tests.resume_fixtures import HalfSent

MiB = 1024 * 1024
#: a checkpoint after every MiB a request appends, so a few MiB sent leave several
CONFIG = "uploads:\n  checkpoint_bytes: 1048576\n"


def _received(cluster: Cluster, protocol: str) -> int | None:
    with psycopg.connect(cluster.catalog) as conn:
        row = conn.execute("SELECT received FROM upload_sessions WHERE protocol = %s", (protocol,)).fetchone()
        return None if row is None else int(row[0])


def _wait_saved(cluster: Cluster, protocol: str, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while (_received(cluster, protocol) or 0) < at_least:
        assert time.monotonic() < deadline, f"node A saved no {at_least} bytes of the {protocol} upload in 60 s"
        time.sleep(0.2)


def _two_nodes(cluster: Cluster, tmp_path: Path) -> tuple[Node, Node]:
    config = tmp_path / "node.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    # both: the nodes record their upload settings in the shared catalog
    return cluster.start_node("a", ["--config", str(config)]), cluster.start_node("b", ["--config", str(config)])


def test_offset_queries_on_b_report_what_a_saved_before_it_died_mid_body(cluster: Cluster, tmp_path: Path) -> None:
    a, b = _two_nodes(cluster, tmp_path)
    sa, sb = a.session(), b.session()
    ranged, ietf = os.urandom(8 * MiB), os.urandom(8 * MiB)
    sent = 5 * MiB + 12345
    stalled_range = HalfSent(a.port, "PUT", "/ranged.bin", a.auth(),
                             {"Content-Range": f"bytes 0-{len(ranged) - 1}/{len(ranged)}"}, ranged, sent)
    created = sa.post(a.url + "/ietf.bin", data=b"", headers={
        "Upload-Complete": "?0", "Upload-Draft-Interop-Version": "8", "Upload-Length": str(len(ietf))})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    stalled_ietf = HalfSent(a.port, "PATCH", location, a.auth(), {
        "Content-Type": "application/partial-upload", "Upload-Offset": "0", "Upload-Complete": "?1"}, ietf, sent)
    try:
        _wait_saved(cluster, "range", 2 * MiB)
        _wait_saved(cluster, "ietf", 2 * MiB)
        a.kill()  # SIGKILL in the middle of both bodies
    finally:
        stalled_range.cut()
        stalled_ietf.cut()
    saved_range, saved_ietf = _received(cluster, "range"), _received(cluster, "ietf")
    assert saved_range is not None and 2 * MiB <= saved_range <= sent
    assert saved_ietf is not None and 2 * MiB <= saved_ietf <= sent

    ask = sb.put(b.url + "/ranged.bin", data=b"", headers={"Content-Range": f"bytes */{len(ranged)}"})
    assert ask.status_code == 308, ask.text
    assert int(ask.headers["Upload-Offset"]) == saved_range
    assert ask.headers["Range"] == f"bytes=0-{saved_range - 1}"
    done = sb.put(b.url + "/ranged.bin", data=ranged[saved_range:],
                  headers={"Content-Range": f"bytes {saved_range}-{len(ranged) - 1}/{len(ranged)}"})
    assert done.status_code == 201, done.text
    assert sb.get(b.url + "/ranged.bin").content == ranged

    head = sb.head(b.url + location)
    assert head.status_code == 204, head.text
    assert int(head.headers["Upload-Offset"]) == saved_ietf
    assert head.headers["Upload-Complete"] == "?0"
    done = sb.patch(b.url + location, data=ietf[saved_ietf:], headers={
        "Content-Type": "application/partial-upload", "Upload-Offset": str(saved_ietf), "Upload-Complete": "?1"})
    assert done.status_code == 201, done.text
    assert sb.get(b.url + "/ietf.bin").content == ietf


def test_a_sabredav_patch_cut_off_by_a_dying_node_changes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    a, b = _two_nodes(cluster, tmp_path)
    sa, sb = a.session(), b.session()
    data = os.urandom(7 * MiB)
    assert sa.put(a.url + "/patched.bin", data=data[:MiB]).status_code == 201
    appended = sa.patch(a.url + "/patched.bin", data=data[MiB : 3 * MiB], headers={
        "Content-Type": "application/x-sabredav-partialupdate", "X-Update-Range": "append"})
    assert appended.status_code == 204, appended.text
    etag = appended.headers["ETag"]
    stalled = HalfSent(a.port, "PATCH", "/patched.bin", a.auth(), {
        "Content-Type": "application/x-sabredav-partialupdate", "X-Update-Range": "append"},
        data[3 * MiB :], 3 * MiB)
    try:
        time.sleep(2.0)  # A has read the 3 MiB sent and waits for the last one
        a.kill()
    finally:
        stalled.cut()
    head = sb.head(b.url + "/patched.bin")
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == 3 * MiB  # the size the last complete PATCH left
    assert head.headers["ETag"] == etag
    assert sb.get(b.url + "/patched.bin").content == data[: 3 * MiB]
    rest = sb.patch(b.url + "/patched.bin", data=data[3 * MiB :], headers={
        "Content-Type": "application/x-sabredav-partialupdate", "X-Update-Range": "append",
        "If-Match": etag})
    assert rest.status_code == 204, rest.text
    assert sb.get(b.url + "/patched.bin").content == data
