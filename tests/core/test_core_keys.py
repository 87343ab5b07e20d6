"""keys.py: key slots (several passphrases for one master key) and pinned key derivation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from davbackup.errors import KeyFileError, UsageError, WrongPassphrase
from davbackup.keys import KeyRing, MasterKeys
from davbackup.repository import Repository
from davbackup.tree import Tree
from davbackup.versions import version_etag
from tests.core_fixtures import PASSPHRASE, USER, init_repo, read_file, write_file

SECOND = "second passphrase for the same repo"


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    d = tmp_path / "repo"
    r = init_repo(d)
    write_file(r.namespace(USER), "/data", b"payload" * 1000)
    r.close()
    return d


def keyring(repo_dir: Path) -> KeyRing:
    return KeyRing(repo_dir / "keys", Repository.read_config(repo_dir).repo_id)


def test_add_second_passphrase_and_open_with_either(repo_dir: Path) -> None:
    with Repository.open(repo_dir, PASSPHRASE, mode="admin") as repo:
        slot = repo.keyring().add(repo.keys, SECOND, label="laptop")
        assert slot.label == "laptop"
    ring = keyring(repo_dir)
    assert len(ring.slots()) == 2
    assert {s.label for s in ring.slots()} == {"initial", "laptop"}
    for pw in (PASSPHRASE, SECOND):
        with Repository.open(repo_dir, pw, mode="read") as repo:
            assert read_file(repo.namespace(USER), "/data") == b"payload" * 1000
    m1, s1 = ring.unlock(PASSPHRASE)
    m2, s2 = ring.unlock(SECOND)
    assert m1 == m2 and s1.slot != s2.slot


def test_remove_slot_rules(repo_dir: Path) -> None:
    ring = keyring(repo_dir)
    (only,) = ring.slots()
    with pytest.raises(UsageError, match="last"):
        ring.remove(only.slot, PASSPHRASE)
    master, _ = ring.unlock(PASSPHRASE)
    second = ring.add(master, SECOND)
    with pytest.raises(UsageError, match="in use"):
        ring.remove(only.slot, PASSPHRASE)
    with pytest.raises(UsageError, match="no key slot"):
        ring.remove("deadbeef", PASSPHRASE)
    with pytest.raises(WrongPassphrase):
        ring.remove(only.slot, "wrong passphrase")
    assert len(ring.slots()) == 2
    ring.remove(only.slot, SECOND)  # remove the first using the second
    assert [s.slot for s in ring.slots()] == [second.slot]
    with pytest.raises(WrongPassphrase):
        Repository.open(repo_dir, PASSPHRASE)
    with Repository.open(repo_dir, SECOND, mode="read") as repo:
        assert read_file(repo.namespace(USER), "/data") == b"payload" * 1000


def test_empty_passphrase_refused(repo_dir: Path) -> None:
    ring = keyring(repo_dir)
    master, _ = ring.unlock(PASSPHRASE)
    with pytest.raises(UsageError):
        ring.add(master, "")


def test_slot_of_another_repository_does_not_open(tmp_path: Path, repo_dir: Path) -> None:
    other = tmp_path / "other"
    init_repo(other).close()
    (slot,) = (other / "keys").glob("*.json")
    (repo_dir / "keys" / slot.name).write_bytes(slot.read_bytes())
    # same passphrase, but the slot is bound to the other repo_id: it must not unlock
    ring = keyring(repo_dir)
    master, used = ring.unlock(PASSPHRASE)
    assert used.path.name != slot.name
    for f in (repo_dir / "keys").glob("*.json"):
        if f.name != slot.name:
            f.unlink()
    with pytest.raises(WrongPassphrase):
        Repository.open(repo_dir, PASSPHRASE)


def test_one_corrupt_slot_does_not_block_the_others(repo_dir: Path) -> None:
    ring = keyring(repo_dir)
    master, first = ring.unlock(PASSPHRASE)
    ring.add(master, SECOND)
    first.path.write_text("{broken")
    with Repository.open(repo_dir, SECOND, mode="read"):
        pass
    with pytest.raises(WrongPassphrase):
        ring.unlock("neither of them")


def test_key_files_hold_no_plain_secret(repo_dir: Path) -> None:
    ring = keyring(repo_dir)
    master, slot = ring.unlock(PASSPHRASE)
    text = slot.path.read_text()
    assert master.material.hex() not in text
    assert PASSPHRASE not in text
    data = json.loads(text)
    assert data["kdf"]["name"] == "argon2id"
    assert slot.path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("change", [None, {"version": "x"}, {"created": "yesterday"}, {"created": None}])
def test_slots_reports_malformed_file_as_key_error(repo_dir: Path, change: dict | None) -> None:
    """``KeyRing.slots()`` (``davbackup key list``) must name the bad file, not crash."""
    (good,) = (repo_dir / "keys").glob("*.json")
    if change is None:
        text = "[1, 2]"
    else:
        data = json.loads(good.read_text())
        data.update(change)
        data["slot"] = "zzzz"
        text = json.dumps(data)
    (repo_dir / "keys" / "zzzz.json").write_text(text)
    with pytest.raises(KeyFileError, match="zzzz"):
        keyring(repo_dir).slots()


def test_key_derivation_is_pinned() -> None:
    """Every stored ID, name hash and etag depends on these derivations: pin them."""
    m = MasterKeys(bytes(range(64)))
    assert m.chunk_id_key().hex() == "4ca126b9fb0172ebf49dec544f29d2e2ea31ee754a33bb6f852372cf17348d12"
    assert m.chunk_subkey_base().hex() == "6175c07e5a1100875c25173705ce06f320c86b645c416d6b48e6f292d23661c0"
    assert m.name_key().hex() == "253d8345f2856aa16ee45efd76e20d95e639b8a9f0e343cfc5f03c6474d19ae0"
    assert m.name_hash_key().hex() == "6445d1effed356d8734a36533ef6ff01442867690fadc66e92b8c4bcda3301ad"
    assert m.etag_key().hex() == "c2371797295f40583703c6ed10862133615e0065bb9c2222b7f5c9fc733ebc29"
    assert version_etag(m.etag_key(), 9, [b"\x01" * 32]) == "c6d77ec265566826154c41225c287f77"
    assert Tree(m.name_key(), m.name_hash_key()).name_hash(7, "a.txt").hex() == "eb2bce76522f1a3bbb51f8b85b63bd8d"
