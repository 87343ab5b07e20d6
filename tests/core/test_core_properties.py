"""Property-based round trips: edited versions and random range reads (writer.py, reader.py)."""

from __future__ import annotations

import io
import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from davbackup.fs import Namespace
from davbackup.repository import Repository
from tests.core_fixtures import USER, init_repo, read_file, write_file

_counter = itertools.count()

PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, derandomize=True,  # seeded: same examples every run
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def prop_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    r = init_repo(Path(tmp_path_factory.mktemp("prop")) / "repo", small=True)
    yield r
    r.close()


@pytest.fixture(scope="module")
def prop_ns(prop_repo: Repository) -> Namespace:
    return prop_repo.namespace(USER)


def base_data(seed: int, size: int, text: bool) -> bytes:
    rng = random.Random(seed)
    if text:
        return b"".join(b"line %d of the log: status=%d\n" % (i, rng.randrange(600)) for i in range(size // 30 + 1))[:size]
    return rng.randbytes(size)


edit = st.one_of(
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=3000)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 20_000)),
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.binary(min_size=1, max_size=3000)),
    st.tuples(st.just("append"), st.just(1.0), st.binary(min_size=1, max_size=5000)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
)


def apply_edit(data: bytes, op: tuple) -> bytes:
    kind, where, arg = op
    pos = int(where * len(data))
    if kind == "insert":
        return data[:pos] + arg + data[pos:]
    if kind == "delete":
        return data[:pos] + data[pos + arg :]
    if kind == "overwrite":
        return data[:pos] + arg + data[pos + len(arg) :]
    if kind == "append":
        return data + arg
    return data[:pos]


@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 200_000),
    text=st.booleans(),
    edits=st.lists(edit, min_size=1, max_size=5),
    piece=st.sampled_from([1, 1000, 4096, 65536, 1 << 20]),
)
def test_edited_versions_read_back(prop_ns: Namespace, seed: int, size: int, text: bool,
                                   edits: list[tuple], piece: int) -> None:
    path = f"/v{next(_counter)}"
    data = base_data(seed, size, text)
    versions = [data]
    for op in edits:
        versions.append(apply_edit(versions[-1], op))
    for i, content in enumerate(versions):
        entry = write_file(prop_ns, path, content, piece=piece if len(content) < 50_000 else max(piece, 4096))
        assert entry.size == len(content)
        prop_ns.copy(path, f"{path}.keep{i}", overwrite=False)  # shares the version
        assert read_file(prop_ns, path) == content
    # every kept copy still holds its version after the original was overwritten
    for i, content in enumerate(versions):
        assert read_file(prop_ns, f"{path}.keep{i}") == content
    # equal content has equal etags, different content (almost surely) different ones
    tags = {prop_ns.stat(f"{path}.keep{i}").etag: content for i, content in enumerate(versions)}
    assert len(tags) == len(set(versions))


@pytest.fixture(scope="module")
def range_file(prop_ns: Namespace) -> bytes:
    data = random.Random(4).randbytes(150_000) + base_data(5, 150_000, True)
    write_file(prop_ns, "/range.bin", data, piece=10_000)
    return data


@PROPERTY_SETTINGS
@given(reads=st.lists(st.tuples(st.integers(0, 310_000), st.integers(-1, 70_000)), min_size=1, max_size=25))
def test_random_range_reads(prop_ns: Namespace, range_file: bytes, reads: list[tuple[int, int]]) -> None:
    with prop_ns.open_read("/range.bin") as reader:
        assert reader.size == len(range_file)
        for pos, n in reads:
            assert reader.seek(pos) == pos
            got = reader.read(n)
            want = range_file[pos:] if n < 0 else range_file[pos : pos + n]
            assert got == want
            assert reader.tell() == pos + len(want)


def test_seek_whence_and_readinto(prop_ns: Namespace, range_file: bytes) -> None:
    with prop_ns.open_read("/range.bin") as reader:
        assert reader.seek(-100, io.SEEK_END) == len(range_file) - 100
        assert reader.read() == range_file[-100:]
        assert reader.read(10) == b""
        reader.seek(1000)
        reader.seek(500, io.SEEK_CUR)
        buf = bytearray(4096)
        assert reader.readinto(buf) == 4096
        assert bytes(buf) == range_file[1500:5596]
        with pytest.raises(ValueError):
            reader.seek(-1)
    with prop_ns.open_read("/range.bin") as reader:
        buffered = io.BufferedReader(reader, buffer_size=7000)
        assert buffered.read() == range_file


def test_small_sequential_reads(prop_ns: Namespace, range_file: bytes) -> None:
    out = bytearray()
    with prop_ns.open_read("/range.bin") as reader:
        while True:
            piece = reader.read(3333)
            if not piece:
                break
            out += piece
    assert bytes(out) == range_file


def test_reader_keeps_its_version_while_the_file_is_replaced(prop_repo: Repository, prop_ns: Namespace) -> None:
    """A GET that runs while a PUT replaces the file must deliver the old content whole.

    The reader fetches the chunk list in batches of 512; with 1–16 KiB test chunks a
    4 MiB file spans more than one batch (with production chunks: files over ~600 MiB).
    """
    old = random.Random(8).randbytes(4 * 1024 * 1024)
    write_file(prop_ns, "/replaced.bin", old)
    got = bytearray()
    with prop_ns.open_read("/replaced.bin") as reader:
        got += reader.read(100_000)
        write_file(prop_ns, "/replaced.bin", b"new content")
        while piece := reader.read(1 << 20):
            got += piece
    assert bytes(got) == old
