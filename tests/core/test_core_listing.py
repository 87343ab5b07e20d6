"""The tuple listing PROPFIND answers from (davbackup/listing.py) says what
``Namespace.list`` says, and refuses a tampered name the same way."""

from __future__ import annotations

import hashlib

import pytest

from davbackup import listing
from davbackup.errors import IntegrityError
from davbackup.fs import Namespace
from tests.core_fixtures import write_file


def _as_tuple(entry: object) -> tuple:
    e = entry
    return (e.name, e.is_dir, e.size, e.etag, e.created, e.modified, e.node_id,  # type: ignore[attr-defined]
            e.checksums, e.version_id)  # type: ignore[attr-defined]


def test_children_are_the_listing_as_tuples(ns: Namespace) -> None:
    ns.mkdir("/d")
    for name in ("b.txt", "A.txt", "caf\u00e9 & (1).pdf", "\u65e5\u672c.docx", "empty"):
        write_file(ns, f"/d/{name}", name.encode() * 10 if name != "empty" else b"")
    ns.mkdir("/d/sub")
    ns.mkdir("/d/a-folder")
    pending = ns.open_write("/d/summed.bin")
    pending.write(b"hello")
    pending.commit(checksums=lambda: f"SHA1:{hashlib.sha1(b'hello').hexdigest()}")
    ns.set_prop("/d/b.txt", "{urn:x}p", "<p xmlns='urn:x'>v</p>")

    own, children, props = ns.node_listing(ns.stat("/d"), True)
    assert own == {}
    assert children == [_as_tuple(e) for e in ns.list("/d")]
    assert [c[listing.NAME] for c in children] == sorted(c[listing.NAME] for c in children)
    assert any(c[listing.CHECKSUMS] for c in children)
    b = next(c for c in children if c[listing.NAME] == "b.txt")
    assert props == {b[listing.NODE_ID]: {"{urn:x}p": "<p xmlns='urn:x'>v</p>"}}
    assert ns.node_listing(ns.stat("/d/sub"), True) == ({}, [], {})
    assert ns.node_listing(ns.stat("/d/b.txt"), False) == ({"{urn:x}p": "<p xmlns='urn:x'>v</p>"}, [], {})


def test_a_name_moved_to_another_row_is_refused(ns: Namespace) -> None:
    ns.mkdir("/d")
    write_file(ns, "/d/a.txt", b"a")
    write_file(ns, "/d/b.txt", b"b")
    a, b = ns.stat("/d/a.txt").node_id, ns.stat("/d/b.txt").node_id

    def swap(conn):  # type: ignore[no-untyped-def]
        blob_a = conn.execute("SELECT name_enc FROM nodes WHERE id=?", (a,)).fetchone()[0]
        blob_b = conn.execute("SELECT name_enc FROM nodes WHERE id=?", (b,)).fetchone()[0]
        conn.execute("UPDATE nodes SET name_enc=? WHERE id=?", (blob_b, a))
        conn.execute("UPDATE nodes SET name_enc=? WHERE id=?", (blob_a, b))

    ns.store.catalog.write(swap)
    with pytest.raises(IntegrityError, match="name fails verification"):
        ns.node_listing(ns.stat("/d"), True)
