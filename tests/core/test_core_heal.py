"""Damage a person can act on, and self-healing: a damaged chunk is reported with every
file version that needs it; uploading the same content again stores a fresh copy."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from davbackup import clock
from davbackup.errors import IntegrityError
from davbackup.maintenance.check import check_repository
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, USER, flip_byte, init_repo, read_file, write_file

DATA = random.Random(9).randbytes(200_000)


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, bytes]:
    """report.bin (written 20 s ago, then overwritten with other bytes) shares a chunk
    with copy.bin; one byte of that chunk is flipped in its pack."""
    root = tmp_path / "repo"
    repo = init_repo(root, small=True)
    try:
        ns = repo.namespace(USER)
        clock.set_offset(-20)
        write_file(ns, "/report.bin", DATA)
        clock.set_offset(0)
        write_file(ns, "/report.bin", b"replaced")
        write_file(ns, "/copy.bin", DATA)
        cid = repo.catalog.reader().execute(
            "SELECT chunk_id FROM version_chunks WHERE version_id=(SELECT version_id FROM nodes WHERE id=?)"
            " ORDER BY offset LIMIT 1", (ns.stat("/copy.bin").node_id,)).fetchone()[0]
        loc = repo.chunks.locate(cid)
        assert loc is not None
        flip_byte(repo.storage.path(repo.chunks.pack_name(loc.pack_id)), loc.offset + 80)
    finally:
        clock.set_offset(0)
        repo.close()
    return root, cid


def test_check_names_every_version_that_needs_the_chunk(damaged: tuple[Path, bytes]) -> None:
    root, cid = damaged
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        report = check_repository(repo, read_data=True)
    (problem,) = [p for p in report.problems if cid.hex()[:16] in p]
    assert f"{USER}:/copy.bin (current)" in problem
    assert f"{USER}:/report.bin as of " in problem and "(history, replaced " in problem


def test_damaged_read_fails_then_reupload_heals(damaged: tuple[Path, bytes]) -> None:
    root, cid = damaged
    with Repository.open(root, PASSPHRASE) as repo:
        ns = repo.namespace(USER)
        with pytest.raises(IntegrityError, match="copy.bin"):
            read_file(ns, "/copy.bin")
        conn = repo.catalog.reader()
        assert conn.execute("SELECT count(*) FROM damaged_chunks WHERE id=?", (cid,)).fetchone()[0] == 1
        write_file(ns, "/again.bin", DATA)  # a client uploads the same content again
        assert conn.execute("SELECT count(*) FROM damaged_chunks").fetchone()[0] == 0
        assert read_file(ns, "/copy.bin") == DATA  # the old path reads the fresh copy
        assert read_file(ns, "/again.bin") == DATA
        history = ns.history()
        (old,) = [v for v in history.versions("/report.bin") if v.entry.size == len(DATA)]
        assert history.open_version("/report.bin", old.name).read() == DATA
        assert check_repository(repo, read_data=True).ok


def test_check_marks_damage_so_the_next_upload_heals(damaged: tuple[Path, bytes]) -> None:
    root, cid = damaged
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert not check_repository(repo, read_data=True).ok
    with Repository.open(root, PASSPHRASE) as repo:
        ns = repo.namespace(USER)
        write_file(ns, "/copy.bin", DATA)  # re-uploading the affected file repairs it
        assert check_repository(repo, read_data=True).ok
        assert read_file(ns, "/copy.bin") == DATA
