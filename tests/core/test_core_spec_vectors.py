"""The test vectors of DESIGN.md §16, read from the document and checked against the code.

Where the document specifies a construction (blob header layout, associated data),
the expected bytes are also rebuilt here from the primitives (``cryptography``'s
AES-GCM, ``blake3``) without davbackup's own helpers, so a vector cannot pass merely
because the code agrees with itself.
"""

from __future__ import annotations

import ast
import json
import re
import struct
from pathlib import Path
from types import SimpleNamespace

import blake3
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from davbackup import crypto
from davbackup.chunker import Chunker, StreamChunker
from davbackup.config import LEGACY_CHUNKER, ChunkerParams

from davbackup.keys import KeyRing, MasterKeys
from davbackup.pack import BlobCodec, BlobHeader
from davbackup.tree import CHECKSUMS_AD, NAME_AD, PROP_AD, Tree
from davbackup.uploads import PATH_AD, UploadManager
from davbackup.users import check_password
from davbackup.versions import version_etag

DESIGN = Path(__file__).resolve().parents[2] / "davbackup" / "DESIGN.md"
TEXT = DESIGN.read_text(encoding="utf-8")


class Vector:
    """One ```` ```vector NAME ```` block: ``field = value`` lines."""

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.fields: dict[str, str] = {}
        for line in body.strip().splitlines():
            key, sep, value = line.partition(" = ")
            assert sep, f"vector {name}: cannot read {line!r}"
            self.fields[key.strip()] = value.strip()

    def text(self, key: str) -> str:
        value = ast.literal_eval(self.fields[key])
        assert isinstance(value, str), (self.name, key)
        return value

    def hex(self, key: str) -> bytes:
        return bytes.fromhex(self.fields[key])

    def int(self, key: str) -> int:
        return int(self.fields[key])

    def hex_list(self, key: str) -> list[bytes]:
        return [bytes.fromhex(v.strip()) for v in self.fields[key].split(",")]

    def int_list(self, key: str) -> list[int]:
        return [int(v.strip()) for v in self.fields[key].split(",")]


VECTORS = {m.group(1): Vector(m.group(1), m.group(2))
           for m in re.finditer(r"```vector (\S+)\n(.*?)```", TEXT, re.DOTALL)}


def vector(name: str) -> Vector:
    assert name in VECTORS, f"DESIGN.md has no vector {name!r}"
    return VECTORS[name]


def master() -> MasterKeys:
    return MasterKeys(vector("keys").hex("master"))


def test_design_has_every_vector():
    assert set(VECTORS) == {"keys", "chunker", "chunker-legacy", "blob", "blob-segmented", "blob-zstd", "name", "etag", "key-slot", "password"}


def test_key_derivation():
    v, keys = vector("keys"), master()
    assert v.hex("master") == bytes(range(64))
    assert keys.chunk_id_key() == v.hex("chunk-id-key")
    assert keys.chunker_seed() == v.int("chunker-seed")
    assert keys.name_hash_key() == v.hex("name-hash-key")
    assert keys.etag_key() == v.hex("etag-key")
    assert keys.chunk_subkey_base() == v.hex("chunk-data-key")
    assert keys.name_key() == v.hex("name-key")
    # derive(K, ctx) = BLAKE3-keyed(K, "davbackup-subkey\0" || ctx)   (§3)
    identity = keys.material[32:]
    assert blake3.blake3(b"davbackup-subkey\x00chunk-id", key=identity).digest() == v.hex("chunk-id-key")
    seed = blake3.blake3(b"davbackup-subkey\x00chunker-seed", key=identity).digest()
    assert (int.from_bytes(seed[:8], "big") & ((1 << 62) - 1)) | 1 == v.int("chunker-seed")


def test_chunker_parameters_are_the_documented_ones():
    params = ChunkerParams()
    documented = dict(re.findall(r"`(min_size|avg_size|max_size) = (\d+)`", TEXT))
    assert {k: int(v) for k, v in documented.items()} == {
        "min_size": params.min_size, "avg_size": params.avg_size, "max_size": params.max_size}
    assert f"normalisation level `nc = {params.normalization}`" in TEXT


@pytest.fixture(scope="module")
def chunker_input() -> bytes:
    v = vector("chunker")
    return blake3.blake3(v.text("input").encode("ascii")).digest(length=v.int("length"))


@pytest.mark.parametrize(("name", "params"), [("chunker", ChunkerParams()), ("chunker-legacy", LEGACY_CHUNKER)])
def test_chunker_cut_points(chunker_input, name, params):
    v = vector(name)
    ends, position = [], 0
    for length in Chunker(params, master().chunker_seed()).lengths(chunker_input):
        position += length
        ends.append(position)
    assert ends == v.int_list("ends")


def test_stream_chunker_makes_the_same_cuts(chunker_input):
    stream = StreamChunker(Chunker(ChunkerParams(), master().chunker_seed()))
    chunks: list[bytes] = []
    for start in range(0, len(chunker_input), 777_777):  # pieces that align with nothing
        chunks.extend(stream.feed(chunker_input[start:start + 777_777]))
    chunks.extend(stream.finish())
    ends, position = [], 0
    for chunk in chunks:
        position += len(chunk)
        ends.append(position)
    assert ends == vector("chunker").int_list("ends")
    assert b"".join(chunks) == chunker_input


def _codec() -> BlobCodec:
    keys = master()
    return BlobCodec(keys.chunk_subkey_base(), keys.chunk_id_key())


def test_blob_vector_built_from_the_specification():
    v, keys = vector("blob"), master()
    plaintext, chunk_id, nonce = v.text("plaintext").encode("ascii"), v.hex("chunk-id"), v.hex("nonce")
    assert blake3.blake3(plaintext, key=keys.chunk_id_key()).digest() == chunk_id
    # §5: magic, version 1, type 1, flags, reserved, plain length, stored length, ID, nonce, reserved
    header = (b"DBLB" + bytes([1, 1, 0, 0]) + struct.pack(">II", len(plaintext), len(plaintext) + 16)
              + chunk_id + nonce + bytes(4))
    assert len(header) == 64
    subkey = blake3.blake3(chunk_id, key=keys.chunk_subkey_base()).digest()
    assert header + AESGCM(subkey).encrypt(nonce, plaintext, header) == v.hex("blob")


def test_segmented_blob_vector_built_from_the_specification():
    v, keys = vector("blob-segmented"), master()
    plaintext, chunk_id, nonce = v.text("plaintext").encode("ascii"), v.hex("chunk-id"), v.hex("nonce")
    shift = v.int("segment-shift")
    size, count = 1 << shift, -(-len(plaintext) // (1 << shift))
    assert blake3.blake3(plaintext, key=keys.chunk_id_key()).digest() == chunk_id
    # §5.1: version 2, type 1, flags 0, the segment shift; stored length = P + 16 per segment
    header = (b"DBLB" + bytes([2, 1, 0, shift]) + struct.pack(">II", len(plaintext), len(plaintext) + 16 * count)
              + chunk_id + nonce + bytes(4))
    subkey = blake3.blake3(chunk_id, key=keys.chunk_subkey_base()).digest()
    body = b""
    for i in range(count):
        x = struct.pack(">I", i) + bytes([i == count - 1])
        segment_nonce = nonce[:7] + bytes(a ^ b for a, b in zip(nonce[7:], x, strict=True))
        body += AESGCM(subkey).encrypt(segment_nonce, plaintext[i * size:(i + 1) * size], header + x)
    assert header + body == v.hex("blob")


def test_segmented_blob_vector_opens_whole_and_by_range_with_the_code():
    codec, v = _codec(), vector("blob-segmented")
    plaintext, chunk_id, blob = v.text("plaintext").encode("ascii"), v.hex("chunk-id"), v.hex("blob")
    assert codec.open(blob, chunk_id) == plaintext
    header = BlobHeader.parse(blob[:64])
    assert header.segmented and header.shift == v.int("segment-shift")
    for start, end in [(0, 1), (3, 20), (16, 32), (31, 33), (39, 40), (0, 40)]:
        first, stop = header.segment_span(start, end)
        at, length = header.segment_bytes(first, stop)
        part = codec.open_range(header, chunk_id, first, stop, blob[64 + at:64 + at + length])
        assert part == plaintext[first * 16:stop * 16] and first * 16 <= start and end <= first * 16 + len(part)
    # the same ciphertext under a version 1 header, or as another chunk's, or cut short: refused
    tampered = bytearray(blob)
    tampered[64 + 32 + 16 + 2] ^= 1  # in segment 1: segments 0 and 2 still open on their own
    with pytest.raises(Exception):
        codec.open(bytes(tampered), chunk_id)
    t_header = BlobHeader.parse(bytes(tampered[:64]))
    assert codec.open_range(t_header, chunk_id, 0, 1, bytes(tampered[64:96])) == plaintext[:16]
    with pytest.raises(Exception):
        codec.open_range(t_header, chunk_id, 1, 2, bytes(tampered[96:128]))
    with pytest.raises(Exception):  # segment 0's bytes offered as segment 1
        codec.open_range(header, chunk_id, 1, 2, blob[64:96])
    with pytest.raises(Exception):  # the last segment without its last flag cannot be made
        codec.open_range(header, chunk_id, 2, 3, blob[128:152] + bytes(8))


def test_blob_vectors_open_with_the_code():
    codec = _codec()
    v = vector("blob")
    plaintext = v.text("plaintext").encode("ascii")
    assert codec.chunk_id(plaintext) == v.hex("chunk-id")
    assert codec.open(v.hex("blob"), v.hex("chunk-id")) == plaintext
    z = vector("blob-zstd")
    plaintext = z.text("line").encode("ascii") * z.int("repeat")
    blob = z.hex("blob")
    header = BlobHeader.parse(blob[:64])
    assert header.flags & 1 and header.chunk_id == z.hex("chunk-id") and header.plain_len == len(plaintext)
    assert codec.open(blob, z.hex("chunk-id")) == plaintext
    tampered = bytearray(blob)
    tampered[70] ^= 1
    with pytest.raises(Exception):
        codec.open(bytes(tampered), z.hex("chunk-id"))


def test_name_vector():
    v, keys = vector("name"), master()
    name = v.text("name")
    tree = Tree(keys.name_key(), keys.name_hash_key())
    assert tree.name_hash(v.int("parent-id"), name) == v.hex("name-hash")
    expected_hash = blake3.blake3(v.int("parent-id").to_bytes(8, "big") + name.encode("utf-8"),
                                  key=keys.name_hash_key()).digest(16)
    assert expected_hash == v.hex("name-hash")
    nonce = v.hex("nonce")
    ids = (v.int("node-id"), v.int("parent-id"), v.int("version-id"))
    ad = b"davbackup-name-v2" + b"".join(i.to_bytes(8, "big") for i in ids)
    sealed = nonce + AESGCM(keys.name_key()).encrypt(nonce, name.encode("utf-8"), ad)
    assert sealed == v.hex("name-enc")
    assert tree.open_name(v.hex("name-enc"), *ids) == name


def test_etag_and_upload_path_vectors():
    v, keys = vector("etag"), master()
    assert version_etag(keys.etag_key(), v.int("size"), v.hex_list("chunk-ids")) == v.fields["etag"]
    manager = SimpleNamespace(_path_key=keys.name_hash_key())
    assert UploadManager._path_hash(manager, v.text("upload-path")) == v.hex("upload-path-hash")  # type: ignore[arg-type]


def test_key_slot_vector(tmp_path):
    v = vector("key-slot")
    kdf = crypto.KdfParams(memory_kib=v.int("memory-kib"), iterations=v.int("iterations"), lanes=v.int("lanes"))
    kek = kdf.derive(v.text("passphrase"), v.hex("salt"))
    assert kek == v.hex("kek")
    ad = f"davbackup-key-v1\x00{v.text('repo-id')}\x00{v.text('slot')}".encode("ascii")
    assert AESGCM(kek).encrypt(v.hex("nonce"), master().material, ad) == v.hex("wrapped")
    # a slot file written as §3 describes opens with the code
    import base64
    record = {"format": "davbackup-key", "version": 1, "slot": v.text("slot"), "label": "vector",
              "created": 1795800000.0, "kdf": kdf.to_json(),
              "salt": base64.b64encode(v.hex("salt")).decode(), "nonce": base64.b64encode(v.hex("nonce")).decode(),
              "wrapped": base64.b64encode(v.hex("wrapped")).decode()}
    (tmp_path / f"{v.text('slot')}.json").write_text(json.dumps(record), encoding="utf-8")
    keys, slot = KeyRing(tmp_path, v.text("repo-id")).unlock(v.text("passphrase"))
    assert keys.material == master().material and slot.slot == v.text("slot")


def test_password_vector():
    v = vector("password")
    assert check_password(v.text("password"), v.text("encoded"))
    assert not check_password(v.text("password") + "x", v.text("encoded"))


def test_every_associated_data_string_is_documented():
    for constant in (NAME_AD, PROP_AD, CHECKSUMS_AD, PATH_AD):
        assert f'"{constant.decode("ascii")}"' in TEXT, constant
    assert '"davbackup-key-v1\\0"' in TEXT and '"davbackup-subkey\\0"' in TEXT
