"""chunker.py: pinned cut points, stream/buffer equivalence, size bounds.

A silent change to the chunker (library upgrade, parameter drift, seed derivation)
breaks deduplication against every existing repository, so the cut points of seeded
input are pinned here as literal numbers.
"""

from __future__ import annotations

import ctypes
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from davbackup.chunker import Chunker, StreamChunker
from davbackup.config import LEGACY_CHUNKER, ChunkerParams
from davbackup.keys import MasterKeys
from tests.core_fixtures import MiB, SMALL_CHUNKER

GOLDEN_SEED = 0x5EED5EED5EED5EED
# Chunker(LEGACY_CHUNKER, GOLDEN_SEED).lengths(random.Random(42).randbytes(16 MiB)): the
# parameters of every repository created before the 512 KiB defaults; they keep them.
GOLDEN_LENGTHS = [
    1783890, 1298382, 806846, 561456, 1203522, 1969371, 295380,
    1059814, 1551085, 2147568, 1654114, 2298753, 147035,
]
# The same data under seed 1: a different seed must give different cuts.
GOLDEN_LENGTHS_SEED_1 = [
    441901, 1563378, 1773859, 1115048, 1052105, 629097, 1282956,
    1219892, 1953409, 907584, 1857257, 2328338, 652392,
]


@pytest.fixture(scope="module")
def golden_data() -> bytes:
    return random.Random(42).randbytes(16 * MiB)


# Chunker(ChunkerParams(), GOLDEN_SEED) on the same data: the defaults of new repositories.
GOLDEN_LENGTHS_DEFAULT = [
    548096, 1005905, 229889, 933937, 657291, 514000, 561456, 952586, 543716, 547300,
    978077, 151214, 295380, 829812, 561548, 585669, 633870, 570577, 525631, 541599,
    509761, 612171, 657431, 601290, 753902, 582338, 576546, 316224,
]


def test_params_are_pinned() -> None:
    p = ChunkerParams()
    assert (p.name, p.min_size, p.avg_size, p.max_size, p.normalization) == (
        "fastcdc-2020-seeded", 128 * 1024, 512 * 1024, 2 * 1024 * 1024, 2
    )
    old = LEGACY_CHUNKER
    assert (old.name, old.min_size, old.avg_size, old.max_size, old.normalization) == (
        "fastcdc-2020-seeded", 256 * 1024, 1024 * 1024, 4 * 1024 * 1024, 1
    )


def test_golden_cut_points(golden_data: bytes) -> None:
    assert Chunker(LEGACY_CHUNKER, GOLDEN_SEED).lengths(golden_data) == GOLDEN_LENGTHS
    assert Chunker(ChunkerParams(), GOLDEN_SEED).lengths(golden_data) == GOLDEN_LENGTHS_DEFAULT


def test_golden_cut_points_depend_on_seed(golden_data: bytes) -> None:
    assert Chunker(LEGACY_CHUNKER, 1).lengths(golden_data) == GOLDEN_LENGTHS_SEED_1


@pytest.mark.parametrize(("fields", "message"), [
    ({"min_size": 32}, "minimum chunk size 32"),
    ({"avg_size": 8 * MiB}, "average chunk size"),
    ({"max_size": 32 * MiB}, "maximum chunk size"),
    ({"min_size": 512 * 1024, "avg_size": 512 * 1024}, "must grow"),
    ({"normalization": 4}, "normalization 4"),
])
def test_params_out_of_range_are_refused(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChunkerParams(**fields)  # type: ignore[arg-type]


def test_seed_derivation_is_pinned() -> None:
    """The per-repository seed comes from the identity key; pin the derivation too."""
    assert MasterKeys(bytes(range(64))).chunker_seed() == 0x120374ABC224BF99


@pytest.mark.parametrize(("params", "expected"), [(LEGACY_CHUNKER, GOLDEN_LENGTHS),
                                                  (ChunkerParams(), GOLDEN_LENGTHS_DEFAULT)],
                         ids=["legacy", "default"])
def test_stream_chunker_golden(golden_data: bytes, params: ChunkerParams, expected: list[int]) -> None:
    stream = StreamChunker(Chunker(params, GOLDEN_SEED))
    rng = random.Random(7)
    pieces: list[int] = []
    pos = 0
    while pos < len(golden_data):
        n = rng.choice([1, 17, 4096, 65536, 1 << 20, 3 << 20, 9 << 20])
        for chunk in stream.feed(golden_data[pos : pos + n]):
            pieces.append(len(chunk))
        pos += n
    pieces.extend(len(c) for c in stream.finish())
    assert pieces == expected


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_stream_equals_buffer_random_pieces(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(1, 400_000))
    chunker = Chunker(SMALL_CHUNKER, seed * 7919)
    expected = chunker.lengths(data)
    stream = StreamChunker(chunker)
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 2, 3, 100, 1000, 5000, 16384, 16385, 70000])
        out.extend(stream.feed(data[pos : pos + n]))
        # memory is bounded by max_size plus one piece
        assert stream.buffered < 2 * SMALL_CHUNKER.max_size + n
        pos += n
    out.extend(stream.finish())
    assert [len(c) for c in out] == expected
    assert b"".join(out) == data
    assert stream.buffered == 0


@settings(max_examples=60, deadline=None, derandomize=True)  # seeded: same examples every run
@given(
    data=st.binary(min_size=0, max_size=120_000),
    cuts=st.lists(st.integers(min_value=1, max_value=40_000), min_size=0, max_size=30),
    seed=st.integers(min_value=1, max_value=2**63 - 1),
)
def test_stream_equals_buffer_property(data: bytes, cuts: list[int], seed: int) -> None:
    chunker = Chunker(SMALL_CHUNKER, seed)
    stream = StreamChunker(chunker)
    out: list[bytes] = []
    pos = 0
    for n in cuts:
        out.extend(stream.feed(data[pos : pos + n]))
        pos += n
    out.extend(stream.feed(data[pos:]))
    out.extend(stream.finish())
    assert [len(c) for c in out] == chunker.lengths(data)
    assert b"".join(out) == data


def test_low_entropy_data_is_cut_at_max_size() -> None:
    chunker = Chunker(SMALL_CHUNKER, 99)
    data = bytes(10 * SMALL_CHUNKER.max_size + 5)
    lengths = chunker.lengths(data)
    assert sum(lengths) == len(data)
    assert all(n <= SMALL_CHUNKER.max_size for n in lengths)
    stream = StreamChunker(chunker)
    got = [len(c) for c in stream.feed(data)] + [len(c) for c in stream.finish()]
    assert got == lengths


@pytest.mark.parametrize("params", [ChunkerParams(), SMALL_CHUNKER], ids=["default", "small"])
def test_bounds_respected(params: ChunkerParams) -> None:
    data = random.Random(3).randbytes(12 * params.max_size)
    lengths = Chunker(params, 12345).lengths(data)
    assert sum(lengths) == len(data)
    assert all(params.min_size <= n <= params.max_size for n in lengths[:-1])
    assert 0 < lengths[-1] <= params.max_size


def test_empty_and_tiny_inputs() -> None:
    chunker = Chunker(SMALL_CHUNKER, 5)
    assert chunker.lengths(b"") == []
    assert chunker.lengths(b"x") == [1]
    stream = StreamChunker(chunker)
    assert list(stream.feed(b"")) == []
    assert list(stream.finish()) == []
    assert list(stream.feed(b"abc")) == []
    assert list(stream.finish()) == [b"abc"]


def test_boundaries_resynchronise_after_an_insertion() -> None:
    """Content-defined: an edit near the start leaves later chunks unchanged."""
    chunker = Chunker(SMALL_CHUNKER, 77)
    data = random.Random(11).randbytes(300_000)
    edited = data[:100] + b"!" + data[100:]

    def chunks(buf: bytes) -> set[bytes]:
        out, pos = set(), 0
        for n in chunker.lengths(buf):
            out.add(buf[pos : pos + n])
            pos += n
        return out

    before, after = chunks(data), chunks(edited)
    assert len(after - before) <= 3


def test_stream_chunks_are_views_that_stay_valid():
    """The chunks are read-only views of the buffer, not copies; one kept past the next
    feed keeps its bytes (the buffer is copied, never overwritten under it)."""
    rng = random.Random(11)
    data = rng.randbytes(3 * SMALL_CHUNKER.max_size)
    stream = StreamChunker(Chunker(SMALL_CHUNKER, 5))
    kept = list(stream.feed(data))
    assert kept and all(isinstance(c, memoryview) and c.readonly for c in kept)
    copies = [bytes(c) for c in kept]
    more = rng.randbytes(5 * SMALL_CHUNKER.max_size)
    later = list(stream.feed(more)) + list(stream.finish())
    assert [bytes(c) for c in kept] == copies
    assert b"".join(kept + later) == data + more


def test_stream_buffer_is_reused_not_reallocated():
    """In a long stream the buffer reaches its capacity (two maximum chunks plus a
    piece) and keeps it: the tail left by a cut is moved to its front in place, so
    each fed byte is copied once, and the buffer's memory is never reallocated (before,
    every cut made CPython copy the tail into a new allocation and each piece after it
    reallocate again)."""
    params = SMALL_CHUNKER
    stream = StreamChunker(Chunker(params, 5))
    rng = random.Random(12)
    piece = 4096
    data = rng.randbytes(200 * piece)
    out: list[bytes] = []
    addresses = set()
    for i in range(0, len(data), piece):
        out.extend(bytes(c) for c in stream.feed(data[i : i + piece]))  # no view kept
        if i >= 20 * piece:
            first = ctypes.c_char.from_buffer(stream._buf)
            addresses.add(ctypes.addressof(first))
            del first  # its export would make the next feed copy the buffer
            assert len(stream._buf) <= 2 * params.max_size + piece
    out.extend(bytes(c) for c in stream.finish())
    assert b"".join(out) == data
    assert len(addresses) == 1


@settings(max_examples=60, deadline=None, derandomize=True)  # seeded: same examples every run
@given(
    data=st.binary(min_size=0, max_size=150_000),
    pieces=st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=40_000)), min_size=0, max_size=30),
    seed=st.integers(min_value=1, max_value=2**63 - 1),
)
def test_segments_equal_buffer_property(data: bytes, pieces: list[tuple[bool, int]], seed: int) -> None:
    """Bytes given as segments (read into a buffer behind free room), mixed with fed
    pieces, are cut as the whole buffer is; every segment comes back once."""
    chunker = Chunker(SMALL_CHUNKER, seed)
    recycled: list[tuple[bytearray, bool]] = []
    stream = StreamChunker(chunker, recycle=lambda buf, reusable: recycled.append((buf, reusable)))
    front = SMALL_CHUNKER.max_size
    given: list[bytearray] = []
    out: list[bytes] = []
    pos = 0
    for as_segment, n in [*pieces, (True, len(data))]:
        piece = data[pos : pos + n]
        pos += len(piece)
        if as_segment:
            segment = bytearray(front + len(piece) + 7)
            segment[front : front + len(piece)] = piece
            given.append(segment)
            out.extend(bytes(c) for c in stream.feed_segment(segment, front, front + len(piece)))
            assert stream.buffered < SMALL_CHUNKER.max_size  # cut right away
        else:
            out.extend(bytes(c) for c in stream.feed(piece))
    out.extend(bytes(c) for c in stream.finish())
    assert [len(c) for c in out] == chunker.lengths(data)
    assert b"".join(out) == data
    assert sorted(map(id, given)) == sorted(id(buf) for buf, _ in recycled)
    # no view was kept (but by finish's caller, who holds the last chunks as it ends)
    assert all(reusable for _, reusable in recycled[:-1])


def test_a_segment_whose_chunk_is_still_viewed_is_not_reused() -> None:
    chunker = Chunker(SMALL_CHUNKER, 5)
    data = random.Random(5).randbytes(6 * SMALL_CHUNKER.max_size)
    recycled: list[tuple[bytearray, bool]] = []
    stream = StreamChunker(chunker, recycle=lambda buf, reusable: recycled.append((buf, reusable)))
    front = SMALL_CHUNKER.max_size
    half = len(data) // 2
    first = bytearray(front + half)
    first[front:] = data[:half]
    kept = list(stream.feed_segment(first, front, front + half))
    assert kept and stream.holds(first)
    second = bytearray(front + half)
    second[front:] = data[half:]
    rest = [bytes(c) for c in stream.feed_segment(second, front, front + half)]
    assert recycled == [(first, False)]  # a view of it is held: never handed out again
    rest += [bytes(c) for c in stream.finish()]
    assert b"".join([bytes(c) for c in kept] + rest) == data
    assert [buf for buf, _ in recycled] == [first, second]


def test_segment_pool_reuses_and_limits() -> None:
    from davbackup.body_segments import SegmentPool

    pool = SegmentPool(front=10, payload=20, limit=2)
    a, b = pool.take(), pool.take()
    assert len(a) == len(b) == 30 and a is not b
    pool.give(a)
    assert pool.take() is a  # reused, not made again
    pool.give(b, reusable=False)
    c = pool.take()
    assert c is not b and len(c) == 30
    waiter = threading.Thread(target=lambda: got.append(pool.take()))
    got: list[bytearray] = []
    waiter.start()  # both are out: it waits for one to come back
    pool.give(a)
    waiter.join()
    assert got == [a]
