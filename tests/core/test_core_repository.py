"""repository.py, config.py, catalog.py: opening, refusing, locking, modes."""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from davbackup.catalog import SCHEMA_VERSION
from davbackup.config import FORMAT_VERSION, RepoConfig
from davbackup.errors import (
    DavBackupError,
    KeyFileError,
    Locked,
    RepositoryError,
    UnsupportedFormat,
    UsageError,
    WrongPassphrase,
)
from davbackup.repository import Repository
from tests.core_fixtures import PASSPHRASE, USER, init_repo, read_file, write_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    d = tmp_path / "repo"
    r = init_repo(d)
    write_file(r.namespace(USER), "/hello.txt", b"hello")
    r.close()
    return d


def test_layout_after_init(repo_dir: Path) -> None:
    assert (repo_dir / "config.json").is_file()
    assert len(list((repo_dir / "keys").glob("*.json"))) == 1
    assert (repo_dir / "catalog.sqlite").is_file()
    assert (repo_dir / "packs").is_dir()
    config = json.loads((repo_dir / "config.json").read_text())
    assert config["format"] == "davbackup" and config["version"] == FORMAT_VERSION
    # secrets are not in the config, names are not in the catalog
    raw = (repo_dir / "catalog.sqlite").read_bytes()
    assert b"hello.txt" not in raw


def test_reopen_reads_data(repo_dir: Path) -> None:
    with Repository.open(repo_dir, PASSPHRASE, mode="read") as repo:
        assert read_file(repo.namespace(USER), "/hello.txt") == b"hello"


def test_init_refuses_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("x")
    with pytest.raises(UsageError):
        Repository.init(tmp_path / "x", PASSPHRASE)


def test_wrong_passphrase(repo_dir: Path) -> None:
    with pytest.raises(WrongPassphrase) as info:
        Repository.open(repo_dir, "not the passphrase")
    assert info.value.exit_code == 11
    # a wrong passphrase leaves the writer lock free
    Repository.open(repo_dir, PASSPHRASE).close()


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no config.json"):
        Repository.open(tmp_path, PASSPHRASE)


def test_missing_key_directory(repo_dir: Path) -> None:
    for f in (repo_dir / "keys").iterdir():
        f.unlink()
    (repo_dir / "keys").rmdir()
    with pytest.raises(KeyFileError, match="missing"):
        Repository.open(repo_dir, PASSPHRASE)


def test_empty_key_directory(repo_dir: Path) -> None:
    for f in (repo_dir / "keys").iterdir():
        f.unlink()
    with pytest.raises(KeyFileError):
        Repository.open(repo_dir, PASSPHRASE)


@pytest.mark.parametrize(
    "corruption",
    ["{not json", "[]", "null", '"text"', "\xff\xfe", "{}", '{"format": "davbackup-key", "version": 1}',
     "truncate", "bad-base64", "newer-version", "bad-kdf"],
)
def test_corrupt_key_file(repo_dir: Path, corruption: str) -> None:
    (key,) = (repo_dir / "keys").glob("*.json")
    data = json.loads(key.read_text())
    if corruption == "truncate":
        key.write_text(key.read_text()[:40])
    elif corruption == "bad-base64":
        data["wrapped"] = "!!!not base64!!!"
        key.write_text(json.dumps(data))
    elif corruption == "newer-version":
        data["version"] = 99
        key.write_text(json.dumps(data))
    elif corruption == "bad-kdf":
        data["kdf"] = {"name": "scrypt"}
        key.write_text(json.dumps(data))
    elif corruption == "\xff\xfe":
        key.write_bytes(b"\xff\xfe\x00garbage")
    else:
        key.write_text(corruption)
    with pytest.raises(KeyFileError):
        Repository.open(repo_dir, PASSPHRASE)


def test_tampered_wrapped_key_is_wrong_passphrase_not_crash(repo_dir: Path) -> None:
    (key,) = (repo_dir / "keys").glob("*.json")
    data = json.loads(key.read_text())
    data["slot"] = "00000000"  # the slot name is in the associated data
    key.write_text(json.dumps(data))
    with pytest.raises(WrongPassphrase):
        Repository.open(repo_dir, PASSPHRASE)


def test_newer_format_version(repo_dir: Path) -> None:
    path = repo_dir / "config.json"
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(UnsupportedFormat, match="99") as info:
        Repository.open(repo_dir, PASSPHRASE)
    assert info.value.exit_code == 13


@pytest.mark.parametrize("field,value", [("chunk_id", "sha1"), ("cipher", "rot13"), ("compression", "lz4")])
def test_unknown_algorithm(repo_dir: Path, field: str, value: str) -> None:
    path = repo_dir / "config.json"
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(UnsupportedFormat, match=value):
        Repository.open(repo_dir, PASSPHRASE)


@pytest.mark.parametrize("text", ["{", "[]", '{"format": "other"}', '{"format": "davbackup", "version": 1}'])
def test_malformed_config(repo_dir: Path, text: str) -> None:
    (repo_dir / "config.json").write_text(text)
    with pytest.raises(RepositoryError):
        Repository.open(repo_dir, PASSPHRASE)


def test_config_round_trip() -> None:
    config = RepoConfig(repo_id="abc", pack_target_size=123)
    assert RepoConfig.from_json(config.to_json(), Path("x")) == config


def test_newer_catalog_schema(repo_dir: Path) -> None:
    conn = sqlite3.connect(repo_dir / "catalog.sqlite")
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(UnsupportedFormat):
        Repository.open(repo_dir, PASSPHRASE)
    # a refused open must not keep the writer lock
    conn = sqlite3.connect(repo_dir / "catalog.sqlite")
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
    conn.commit()
    conn.close()
    Repository.open(repo_dir, PASSPHRASE).close()


def test_missing_catalog(repo_dir: Path) -> None:
    (repo_dir / "catalog.sqlite").unlink()
    with pytest.raises(RepositoryError, match="catalog"):
        Repository.open(repo_dir, PASSPHRASE)


def test_second_rw_open_is_locked(repo_dir: Path) -> None:
    first = Repository.open(repo_dir, PASSPHRASE)
    try:
        with pytest.raises(Locked) as info:
            Repository.open(repo_dir, PASSPHRASE)
        assert info.value.http_status == 423
        # admin and read modes may run beside the writer, and see it
        with Repository.open(repo_dir, PASSPHRASE, mode="admin") as admin:
            assert admin.writer_active()
            admin.users.add("bob", "bob-password-1")
        with Repository.open(repo_dir, PASSPHRASE, mode="read") as reader:
            assert read_file(reader.namespace(USER), "/hello.txt") == b"hello"
        assert not first.writer_active()  # our own lock
        assert first.users.get("bob") is not None
    finally:
        first.close()
    second = Repository.open(repo_dir, PASSPHRASE)  # free again after close
    second.close()


def test_rw_lock_held_by_other_process(repo_dir: Path) -> None:
    code = (
        "import os,sys,time;os.environ['DAVBACKUP_KDF_MEMORY_KIB']='1024';"
        "from davbackup.repository import Repository;"
        f"r=Repository.open({str(repo_dir)!r},{PASSPHRASE!r});print('open',flush=True);sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"open\n"
        with pytest.raises(Locked):
            Repository.open(repo_dir, PASSPHRASE)
        with Repository.open(repo_dir, PASSPHRASE, mode="read") as reader:
            assert reader.writer_active()
    finally:
        proc.kill()
        proc.wait()
    Repository.open(repo_dir, PASSPHRASE).close()  # the lock dies with the process


def test_read_and_admin_modes_cannot_store_files(repo_dir: Path) -> None:
    for mode in ("read", "admin"):
        with Repository.open(repo_dir, PASSPHRASE, mode=mode) as repo:
            with pytest.raises(RepositoryError):
                repo.namespace(USER).open_write("/new.txt")
    with pytest.raises(UsageError):
        Repository.open(repo_dir, PASSPHRASE, mode="bogus")


#: The one error table (davbackup/errors.py): each error's HTTP status and CLI exit code.
#: A change here is a change clients and scripts see.
ERROR_TABLE = {
    "DavBackupError": (500, 1),
    "UsageError": (400, 2),
    "InvalidPath": (400, 2),
    "NotFound": (404, 3),
    "AlreadyExists": (405, 3),
    "Conflict": (409, 3),
    "PreconditionFailed": (412, 3),
    "PermissionDenied": (403, 5),
    "AuthenticationFailed": (401, 5),
    "Locked": (423, 6),
    "IncompleteBody": (400, 3),
    "RangeError": (416, 3),
    "RepositoryError": (500, 10),
    "WrongPassphrase": (500, 11),
    "KeyFileError": (500, 12),
    "UnsupportedFormat": (500, 13),
    "CatalogDamaged": (500, 14),
    "IntegrityError": (500, 20),
    "StorageFull": (507, 21),
    "StorageUnavailable": (503, 22),
    "TooLarge": (413, 3),
    "TooManyUploads": (429, 6),
    "OffsetMismatch": (409, 3),
    "LengthMismatch": (400, 3),
    "DigestMismatch": (400, 3),
    # defined elsewhere, in the same hierarchy
    "pgsql.CatalogUnavailable": (503, 22),
    "client.errors.ServerError": (502, 1),
    "client.errors.ConnectionFailed": (503, 4),
    "client.errors.TransferFailed": (400, 3),
}


def test_errors_carry_status_and_exit_code() -> None:
    """Every DavBackupError there is, wherever defined, with exactly its table entry."""
    for module in ("davbackup.client.errors", "davbackup.pgsql"):  # their errors join the hierarchy on import
        importlib.import_module(module)

    found: dict[str, tuple[int, int]] = {}
    todo = [DavBackupError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        module = cls.__module__.removeprefix("davbackup.")
        name = cls.__qualname__ if module == "errors" else f"{module}.{cls.__qualname__}"
        found[name] = (cls.http_status, cls.exit_code)
    assert found == ERROR_TABLE


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    from tests.server_fixtures import _env
    env = {**_env(home), "DAVBACKUP_PASSPHRASE": PASSPHRASE}
    return subprocess.run([sys.executable, "-m", "davbackup", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_init_chunker_params_are_recorded_and_used(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    done = _cli(tmp_path, "init", "--repo", str(root), "--chunker-params", "64K,256K,1M,3")
    assert done.returncode == 0, done.stderr
    recorded = json.loads((root / "config.json").read_text())["chunker"]
    assert (recorded["min_size"], recorded["avg_size"], recorded["max_size"], recorded["normalization"]) == (
        64 * 1024, 256 * 1024, 1024 * 1024, 3)
    data = bytes(range(256)) * 4096 * 3  # 3 MiB: several chunks, none over 1 MiB
    with Repository.open(root, PASSPHRASE) as repo:
        assert repo.chunker.params.max_size == 1024 * 1024
        repo.users.add(USER, "user-password-1")
        write_file(repo.namespace(USER), "/f.bin", data)
    with Repository.open(root, PASSPHRASE, mode="read") as repo:
        assert read_file(repo.namespace(USER), "/f.bin") == data


@pytest.mark.parametrize("value", ["64K,256K", "1M,512K,2M", "32,256K,1M", "64K,256K,64M", "64K,256K,1M,9",
                                   "a,b,c", "none,256K,1M"])
def test_init_refuses_bad_chunker_params_without_side_effect(tmp_path: Path, value: str) -> None:
    root = tmp_path / "repo"
    done = _cli(tmp_path, "init", "--repo", str(root), "--chunker-params", value)
    assert done.returncode == 2
    assert "--chunker-params" in done.stderr
    assert not root.exists()


def test_config_without_a_chunker_field_is_refused(repo_dir: Path) -> None:
    """A default must never stand in for a recorded chunker value (the defaults changed)."""
    config = json.loads((repo_dir / "config.json").read_text())
    del config["chunker"]["normalization"]
    (repo_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RepositoryError, match="malformed config"):
        Repository.open(repo_dir, PASSPHRASE)
