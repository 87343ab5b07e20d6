"""The chunk store on a PostgreSQL catalog when the node's lock session is lost between
a chunk's sync and its commit (DESIGN.md §7.5): the commit is refused if another node
sealed the pack meanwhile, and the next chunk goes to a new pack. Real PostgreSQL."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest

from davbackup import chunk_index
from davbackup.catalog_pg import NODE_CLASS, PgCatalog
from davbackup.chunkstore import ChunkBatch, ChunkStore
from davbackup.errors import StorageUnavailable
from davbackup.pack import BlobCodec
from davbackup.storage import LocalPackStorage
from tests.services import ThrowawayPostgres


def _seal_while_lock_free(url: str, node: int) -> None:
    """End the node's lock session and seal its open packs as a starting node would."""
    with psycopg.connect(url, autocommit=True) as other:
        pid = other.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
                            " AND objid = %s AND granted", (NODE_CLASS, node)).fetchone()
        assert pid is not None
        other.execute("SELECT pg_terminate_backend(%s)", (pid[0],))
        deadline = time.monotonic() + 5
        while not other.execute("SELECT pg_try_advisory_lock(%s, %s)", (NODE_CLASS, node)).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the node lock stayed held"
        with other.transaction():
            other.execute("UPDATE packs SET state = 'sealed' WHERE state = 'open'")
        other.execute("SELECT pg_advisory_unlock(%s, %s)", (NODE_CLASS, node))


def test_commit_into_a_pack_sealed_by_another_node_is_refused(
    tmp_path: Path, postgres_server: ThrowawayPostgres
) -> None:
    url = postgres_server.url(postgres_server.create_database())
    catalog = PgCatalog(url, create=True, writer=True)
    store = ChunkStore(catalog, LocalPackStorage(tmp_path / "packs"), BlobCodec(bytes(32), bytes(32)),
                       1 << 30, writable=True)
    try:
        batch = ChunkBatch()
        store.put(os.urandom(5000), batch)
        store.make_durable(batch)
        (old_pack,) = {loc.pack_id for loc, _ in batch.new.values()}
        _seal_while_lock_free(url, catalog.node)
        with pytest.raises(StorageUnavailable, match="sealed by another node"):
            catalog.write(lambda conn: store.record(conn, batch, time.time()))
        store.release(batch)
        assert chunk_index.count(catalog.reader()) == 0  # nothing points into the sealed pack

        # the next chunk notices the loss, takes the node's locks again, and goes to a new pack
        again = ChunkBatch()
        store.put(os.urandom(5000), again)
        store.make_durable(again)
        (new_pack,) = {loc.pack_id for loc, _ in again.new.values()}
        assert new_pack != old_pack
        catalog.write(lambda conn: store.record(conn, again, time.time()))
        store.release(again)
        assert chunk_index.count(catalog.reader()) == 1
        assert catalog.holder_generation() == 1
    finally:
        store.close()
        catalog.close()
