"""crypto.py and pack.py: sealed blobs, compression choice, tamper detection, pack scans."""

from __future__ import annotations

import io
import random

import pytest

from davbackup import crypto
from davbackup.pack import (
    BLOB_MAGIC,
    FLAG_ZSTD,
    HEADER_SIZE,
    PACK_MAGIC,
    BlobCodec,
    BlobError,
    BlobHeader,
    scan_pack,
)

SUBKEY_BASE = bytes(range(32))
ID_KEY = bytes(range(32, 64))


@pytest.fixture
def codec() -> BlobCodec:
    return BlobCodec(SUBKEY_BASE, ID_KEY)


def random_data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def text_data(n: int) -> bytes:
    rng = random.Random(2)
    words = [b"GET", b"PUT", b"/backup/photos", b"200", b"404", b"davbackup", b"client=rclone"]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(words) for _ in range(8)) + b"\n"
    return bytes(out[:n])


def sealed(codec: BlobCodec, data: bytes) -> tuple[bytes, bytes]:
    cid = codec.chunk_id(data)
    return cid, codec.seal(cid, data)


# -- crypto primitives -------------------------------------------------------------


def test_keyed_hash_is_pinned_and_keyed() -> None:
    key = bytes(32)
    assert crypto.keyed_hash(key, b"abc") == crypto.keyed_hash(key, b"abc")
    assert crypto.keyed_hash(key, b"abc") != crypto.keyed_hash(b"\x01" * 32, b"abc")
    assert len(crypto.keyed_hash(key, b"abc", 16)) == 16
    assert crypto.derive_key(key, "a") != crypto.derive_key(key, "b")


def test_seal_small_round_trip_and_associated_data() -> None:
    key = bytes(range(32))
    blob = crypto.seal_small(key, b"name", b"ad-1")
    assert crypto.open_small(key, blob, b"ad-1") == b"name"
    with pytest.raises(crypto.DecryptionFailed):
        crypto.open_small(key, blob, b"ad-2")
    assert crypto.seal_small(key, b"name", b"ad-1") != blob  # fresh nonce each time


# -- blobs ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 511, 512, 4096, 256 * 1024 + 1, 4 * 1024 * 1024])
def test_round_trip_random(codec: BlobCodec, size: int) -> None:
    data = random_data(size, size)
    cid, blob = sealed(codec, data)
    assert codec.open(blob, expected_id=cid) == data
    header = BlobHeader.parse(blob[:HEADER_SIZE])
    assert header.flags & FLAG_ZSTD == 0, "random data must be stored uncompressed"
    assert header.plain_len == size
    assert len(blob) == HEADER_SIZE + size + crypto.TAG_SIZE


@pytest.mark.parametrize("size", [600, 100_000, 1024 * 1024])
def test_round_trip_text_is_compressed(codec: BlobCodec, size: int) -> None:
    data = text_data(size)
    cid, blob = sealed(codec, data)
    header = BlobHeader.parse(blob[:HEADER_SIZE])
    assert header.flags & FLAG_ZSTD
    assert len(blob) < HEADER_SIZE + size // 2
    assert codec.open(blob, expected_id=cid) == data


@pytest.mark.parametrize("layout", ["random-then-text", "random-then-zeros", "text-then-random"])
def test_partly_compressible_large_chunk_is_compressed(codec: BlobCodec, layout: str) -> None:
    """Samples spread over the chunk find the compressible part wherever it is (a chunk
    of a disk image that starts with random bytes was stored uncompressed before)."""
    first, rest = layout.split("-then-")
    parts = {"random": random_data(256 * 1024), "text": text_data(768 * 1024), "zeros": bytes(768 * 1024)}
    data = parts[first] + parts[rest] if first == "random" else text_data(768 * 1024) + random_data(256 * 1024)
    cid, blob = sealed(codec, data)
    assert BlobHeader.parse(blob[:HEADER_SIZE]).flags & FLAG_ZSTD
    assert len(blob) < HEADER_SIZE + len(data) * 3 // 4
    assert codec.open(blob, expected_id=cid) == data


def test_compression_contexts_are_shared_by_threads_and_bounded(codec: BlobCodec) -> None:
    """Many threads sealing at once each get a context of their own (every blob opens
    to its data), and afterwards at most IDLE_COMPRESSORS contexts are kept, whichever
    threads used them (one per thread held ~70 MiB in a 32-thread server)."""
    from concurrent.futures import ThreadPoolExecutor

    from davbackup.pack import IDLE_COMPRESSORS

    inputs = [text_data(300 * 1024 + i * 4096) for i in range(48)] + [random_data(700 * 1024, i) for i in range(8)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda data: sealed(codec, data), inputs))
    for data, (cid, blob) in zip(inputs, results):
        assert codec.open(blob, expected_id=cid) == data
    assert 1 <= len(codec._idle_compressors) <= IDLE_COMPRESSORS
    assert len({id(c) for c in codec._idle_compressors}) == len(codec._idle_compressors)


def test_large_random_chunk_stays_uncompressed(codec: BlobCodec) -> None:
    data = random_data(2 * 1024 * 1024)
    cid, blob = sealed(codec, data)
    assert BlobHeader.parse(blob[:HEADER_SIZE]).flags & FLAG_ZSTD == 0
    assert len(blob) == HEADER_SIZE + len(data) + 16
    assert codec.open(blob, expected_id=cid) == data


def test_header_layout(codec: BlobCodec) -> None:
    data = b"hello world" * 100
    cid, blob = sealed(codec, data)
    assert blob[:4] == BLOB_MAGIC
    assert blob[4] == 1 and blob[5] == 1
    assert int.from_bytes(blob[8:12], "big") == len(data)
    assert int.from_bytes(blob[12:16], "big") == len(blob) - HEADER_SIZE
    assert blob[16:48] == cid
    assert blob[7] == 0 and blob[60:64] == bytes(4)


def test_chunk_id_is_keyed(codec: BlobCodec) -> None:
    other = BlobCodec(SUBKEY_BASE, bytes(32))
    assert codec.chunk_id(b"x") != other.chunk_id(b"x")


@pytest.mark.parametrize("compressible", [False, True], ids=["random", "text"])
def test_every_byte_is_authenticated(codec: BlobCodec, compressible: bool) -> None:
    data = text_data(3000) if compressible else random_data(3000)
    cid, blob = sealed(codec, data)
    positions = list(range(HEADER_SIZE)) + random.Random(5).sample(range(HEADER_SIZE, len(blob)), 200)
    positions.append(len(blob) - 1)  # the last tag byte
    for pos in positions:
        tampered = bytearray(blob)
        tampered[pos] ^= 0x01
        with pytest.raises(BlobError):
            codec.open(bytes(tampered), expected_id=cid)
        with pytest.raises(BlobError):
            codec.open(bytes(tampered))


def test_truncated_and_extended_blobs(codec: BlobCodec) -> None:
    cid, blob = sealed(codec, random_data(1000))
    for bad in (blob[:-1], blob + b"\x00", blob[: HEADER_SIZE - 1], b""):
        with pytest.raises(BlobError):
            codec.open(bad, expected_id=cid)


def test_wrong_expected_id(codec: BlobCodec) -> None:
    _cid, blob = sealed(codec, b"a" * 100)
    with pytest.raises(BlobError):
        codec.open(blob, expected_id=codec.chunk_id(b"b"))


def test_other_keys_cannot_open(codec: BlobCodec) -> None:
    cid, blob = sealed(codec, b"secret" * 200)
    with pytest.raises(BlobError):
        BlobCodec(bytes(32), ID_KEY).open(blob, expected_id=cid)


def test_blob_moved_under_other_id_fails(codec: BlobCodec) -> None:
    """Swapping the ID in the header (to make a blob answer for another chunk) fails."""
    data_a, data_b = random_data(800, 1), random_data(800, 2)
    _, blob_a = sealed(codec, data_a)
    cid_b = codec.chunk_id(data_b)
    forged = blob_a[:16] + cid_b + blob_a[48:]
    with pytest.raises(BlobError):
        codec.open(forged, expected_id=cid_b)


# -- packs ---------------------------------------------------------------------------


def build_pack(codec: BlobCodec, count: int) -> tuple[bytes, list[tuple[int, bytes, bytes]]]:
    out = bytearray(PACK_MAGIC)
    entries = []
    for i in range(count):
        data = random_data(100 + i * 997, i) if i % 2 else text_data(100 + i * 997)
        cid, blob = sealed(codec, data)
        entries.append((len(out), cid, data))
        out += blob
    return bytes(out), entries


def test_scan_pack_lists_every_blob(codec: BlobCodec) -> None:
    pack, entries = build_pack(codec, 12)
    scanned = list(scan_pack(io.BytesIO(pack)))
    assert [(s.offset, s.header.chunk_id) for s in scanned] == [(o, c) for o, c, _ in entries]
    for s, (_o, cid, data) in zip(scanned, entries):
        blob = pack[s.offset : s.offset + s.total_len]
        assert codec.open(blob, expected_id=cid) == data
    assert scanned[-1].offset + scanned[-1].total_len == len(pack)


@pytest.mark.parametrize("cut", [1, 10, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5])
def test_scan_pack_stops_at_torn_tail(codec: BlobCodec, cut: int) -> None:
    pack, entries = build_pack(codec, 5)
    last_offset = entries[-1][0]
    torn = pack[: last_offset + cut]
    scanned = list(scan_pack(io.BytesIO(torn)))
    assert [s.offset for s in scanned] == [o for o, _, _ in entries[:-1]]


@pytest.mark.parametrize("bodies", [False, True])
@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5])
def test_scan_pack_with_bodies_stops_at_the_same_torn_tail(codec: BlobCodec, cut: int, bodies: bool) -> None:
    pack, entries = build_pack(codec, 5)
    torn = pack[: entries[-1][0] + cut]
    damage: list[int] = []
    scanned = list(scan_pack(io.BytesIO(torn), bodies=bodies, on_damage=damage.append))
    assert [s.offset for s in scanned] == [o for o, _, _ in entries[:-1]]
    assert damage == []
    for s in scanned:
        assert s.body == (pack[s.offset + HEADER_SIZE : s.offset + s.total_len] if bodies else None)


@pytest.mark.parametrize("bodies", [False, True])
def test_scan_pack_stops_at_garbage(codec: BlobCodec, bodies: bool) -> None:
    """Zeros after the last blob are a torn tail (a failed fsync's lost bytes): said
    nowhere. Other bytes that are no header end the walk too, and are reported."""
    pack, entries = build_pack(codec, 3)
    damage: list[int] = []
    scanned = list(scan_pack(io.BytesIO(pack + b"\x00" * 200), bodies=bodies, on_damage=damage.append))
    assert (len(scanned), damage) == (3, [])
    garbage = b"\x17" * HEADER_SIZE + bytes(100)
    scanned = list(scan_pack(io.BytesIO(pack + garbage), bodies=bodies, on_damage=damage.append))
    assert (len(scanned), damage) == (3, [len(pack)])
    assert len(list(scan_pack(io.BytesIO(pack + garbage), bodies=bodies))) == 3


@pytest.mark.parametrize("bodies", [False, True])
def test_scan_pack_empty_torn_magic_and_not_a_pack(bodies: bool) -> None:
    assert list(scan_pack(io.BytesIO(PACK_MAGIC), bodies=bodies)) == []
    for torn in (b"", PACK_MAGIC[:1], PACK_MAGIC[:-1]):
        assert list(scan_pack(io.BytesIO(torn), bodies=bodies)) == []
    with pytest.raises(BlobError):
        list(scan_pack(io.BytesIO(b"NOTAPACK" + b"\x00" * 100), bodies=bodies))
