"""Pack files: append-only containers of encrypted blobs (DESIGN.md §5).

A pack starts with an 8-byte magic and is followed by blobs. Every blob carries a
fixed 64-byte header and its ciphertext::

    offset size field
    0      4    magic b"DBLB"
    4      1    format version (1: one AEAD message; 2: sealed in segments)
    5      1    blob type (1 = file data chunk)
    6      1    flags (bit 0: zstd-compressed plaintext)
    7      1    version 1: reserved, 0; version 2: log2 of the segment size
    8      4    plaintext length (big endian)
    12     4    ciphertext length, tag included (big endian)
    16     32   chunk ID
    48     12   nonce
    60     4    reserved, 0
    64     n    AES-256-GCM ciphertext || 16-byte tag

The whole header is the AEAD associated data, so the ID, type, version, flags and
lengths are authenticated together with the contents. A pack is thus readable
without the catalog: :func:`scan_pack` rebuilds the chunk index from it.

A version 2 blob (uncompressed data chunks over one segment, in repositories of
format 2) seals its plaintext in segments of ``2**shift`` bytes, each with its own
tag, its index and a last-segment flag bound in its nonce and associated data
(STREAM-like, DESIGN.md §5.1): a range of the chunk is read and verified from the
segments that hold it, not the whole blob.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from davbackup import crypto

PACK_MAGIC = b"DAVBPAK1"
BLOB_MAGIC = b"DBLB"
BLOB_VERSION = 1
#: blob format version 2: the body sealed in segments (see SEGMENT_SHIFT)
SEGMENTED_VERSION = 2
HEADER = struct.Struct(">4sBBBBII32s12s4x")
HEADER_SIZE = HEADER.size  # 64
TYPE_DATA = 1
FLAG_ZSTD = 1
MAX_BLOB = 64 * 1024 * 1024
#: compression contexts kept for reuse by a codec, whichever thread used them
IDLE_COMPRESSORS = 4

#: what writers of format-2 repositories use: 64 KiB segments (a 4 KiB range reads and
#: decrypts 64-128 KiB instead of the whole chunk, 512 KiB on average)
SEGMENT_SHIFT = 16
#: the segment sizes a reader accepts: 16 bytes (test vectors) to 16 MiB
SEGMENT_SHIFTS = range(4, 25)
SEGMENT_INDEX = struct.Struct(">IB")

#: chunks over 256 KiB are compressed only if one of PROBES samples of PROBE_SIZE bytes compresses
PROBES = 4
PROBE_SIZE = 16 * 1024

assert HEADER_SIZE == 64


class BlobError(Exception):
    """Internal: a blob failed to parse or verify; callers name file and chunk."""


@dataclass(frozen=True)
class BlobHeader:
    blob_type: int
    flags: int
    plain_len: int
    stored_len: int
    chunk_id: bytes
    nonce: bytes
    raw: bytes
    #: version 2: log2 of the segment size; 0 for a version 1 blob (one AEAD message)
    shift: int = 0

    @classmethod
    def parse(cls, raw: bytes) -> "BlobHeader":
        if len(raw) != HEADER_SIZE:
            raise BlobError("truncated blob header")
        magic, version, blob_type, flags, shift, plain_len, stored_len, chunk_id, nonce = HEADER.unpack(raw)
        if magic != BLOB_MAGIC:
            raise BlobError("bad blob magic")
        if version == BLOB_VERSION:
            shift = 0
        elif version == SEGMENTED_VERSION:
            if blob_type != TYPE_DATA or flags or shift not in SEGMENT_SHIFTS or plain_len == 0:
                raise BlobError("malformed segmented blob header")
            if stored_len != plain_len + segment_count(plain_len, shift) * crypto.TAG_SIZE:
                raise BlobError("implausible blob length")
        else:
            raise BlobError(f"unknown blob version {version}")
        if stored_len < crypto.TAG_SIZE or stored_len > MAX_BLOB or plain_len > MAX_BLOB:
            raise BlobError("implausible blob length")
        return cls(blob_type, flags, plain_len, stored_len, chunk_id, nonce, raw, shift)

    @property
    def segmented(self) -> bool:
        return self.shift != 0

    def segment_span(self, start: int, end: int) -> tuple[int, int]:
        """The segments ``first, stop`` (stop excluded) holding plaintext bytes ``start..end-1``."""
        size = 1 << self.shift
        first = start >> self.shift
        stop = min(segment_count(self.plain_len, self.shift), (max(end, start + 1) + size - 1) >> self.shift)
        return first, stop

    def segment_bytes(self, first: int, stop: int) -> tuple[int, int]:
        """Where the sealed segments ``first..stop-1`` start in the body (after the
        header) and how many bytes they take (the last segment may be short)."""
        size = (1 << self.shift) + crypto.TAG_SIZE
        end = self.stored_len if stop >= segment_count(self.plain_len, self.shift) else stop * size
        return first * size, end - first * size


def segment_count(plain_len: int, shift: int) -> int:
    return max(1, (plain_len + (1 << shift) - 1) >> shift)


def segment_nonce_and_ad(header: bytes, nonce: bytes, index: int, last: bool) -> tuple[bytes, bytes]:
    """Segment ``index``'s nonce (the blob's nonce with ``index || last`` XORed into its
    last 5 bytes) and associated data (the header, then ``index || last``)."""
    suffix = SEGMENT_INDEX.pack(index, 1 if last else 0)
    tail = int.from_bytes(nonce[7:], "big") ^ int.from_bytes(suffix, "big")
    return nonce[:7] + tail.to_bytes(5, "big"), header + suffix


def open_segments(cipher: AESGCM, header: BlobHeader, first: int, stop: int, sealed: bytes | memoryview) -> bytes:
    """Verify and decrypt segments ``first..stop-1`` of a version 2 blob from their
    sealed bytes (ciphertexts and tags, as :meth:`BlobHeader.segment_bytes` places
    them); the plaintext of all of them, or :class:`BlobError` if any tag fails (no
    byte of it is returned)."""
    count = segment_count(header.plain_len, header.shift)
    if not 0 <= first < stop <= count or len(sealed) != header.segment_bytes(first, stop)[1]:
        raise BlobError("segmented blob is truncated")
    size = (1 << header.shift) + crypto.TAG_SIZE
    view = memoryview(sealed)
    # segment_nonce_and_ad inline (a whole read of a 512 KiB chunk opens 8 segments)
    raw, prefix, tail = header.raw, header.nonce[:7], int.from_bytes(header.nonce[7:], "big")
    decrypt = cipher.decrypt
    parts = []
    at = 0
    for index in range(first, stop):
        x = index << 8 | (index == count - 1)
        try:
            parts.append(decrypt(prefix + (tail ^ x).to_bytes(5, "big"), view[at : at + size], raw + x.to_bytes(5, "big")))
        except InvalidTag as exc:
            raise BlobError(f"authentication tag mismatch in segment {index} (data altered or corrupt)") from exc
        at += size
    return parts[0] if len(parts) == 1 else b"".join(parts)


class BlobCodec:
    """Turns chunks into sealed blobs and back, checking the chunk ID on the way out."""

    def __init__(self, subkey_base: bytes, id_key: bytes, compression_level: int = 3,
                 segment_shift: int = 0) -> None:
        """``segment_shift``: seal uncompressed chunks over one segment of ``2**shift``
        bytes as version 2 blobs (format-2 repositories: :data:`SEGMENT_SHIFT`); 0
        writes version 1 blobs only (format 1, which older davbackup reads)."""
        if segment_shift and segment_shift not in SEGMENT_SHIFTS:
            raise ValueError(f"segment shift {segment_shift} outside {SEGMENT_SHIFTS}")
        self._subkey_base = subkey_base
        self._id_key = id_key
        self._level = compression_level
        self.segment_shift = segment_shift
        self._local = threading.local()  # zstd contexts are not thread-safe: one per thread
        #: compression contexts not in use, the most recently used last (see _compress)
        self._idle_compressors: list[zstandard.ZstdCompressor] = []

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "decompressor", None)
        if d is None:
            d = self._local.decompressor = zstandard.ZstdDecompressor()
        return d

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        return crypto.keyed_hash(self._id_key, data)

    def _subkey(self, chunk_id: bytes) -> bytes:
        return crypto.keyed_hash(self._subkey_base, chunk_id)

    def _compress(self, data: bytes | memoryview) -> bytes | None:
        """zstd output if it saves at least 1/32 of the size, else None."""
        if len(data) < 512:
            return None
        # A context that compressed a large chunk keeps a workspace of up to 3.5 MiB.
        # Kept per thread, the server's 32 request threads held ~70 MiB of them after
        # a many-file upload; a small shared stack (list.pop/append are atomic) keeps
        # only as many as compress at once, and taking the last one used keeps them warm.
        idle = self._idle_compressors
        try:
            compressor = idle.pop()
        except IndexError:
            compressor = zstandard.ZstdCompressor(level=self._level)
        try:
            if len(data) > 256 * 1024 and not self._worth_compressing(compressor, data):
                return None
            packed = compressor.compress(data)
        finally:
            if len(idle) < IDLE_COMPRESSORS:
                idle.append(compressor)
        return packed if len(packed) <= len(data) - len(data) // 32 else None

    @staticmethod
    def _worth_compressing(compressor: zstandard.ZstdCompressor, data: bytes | memoryview) -> bool:
        """Whether any of four 16 KiB samples spread over ``data`` compresses.

        Incompressible data costs four small attempts only. One sample at the start
        is not enough: a chunk of a disk image or an archive often begins with random
        bytes and goes on with zeros or text (stored uncompressed, such chunks made
        davbackup's repository 1.3x restic's in ``scripts/bench-storage``).
        """
        step = len(data) // PROBES
        for i in range(PROBES):
            sample = data[i * step : i * step + PROBE_SIZE]
            if len(compressor.compress(sample)) <= len(sample) - len(sample) // 32:
                return True
        return False

    def seal(self, chunk_id: bytes, data: bytes | memoryview) -> bytearray:
        """Header + ciphertext for one chunk (the bytes appended to a pack), made in
        one buffer: the ciphertext is written after the header, not copied there."""
        packed = self._compress(data)
        flags = FLAG_ZSTD if packed is not None else 0
        body = packed if packed is not None else data
        nonce = crypto.random_bytes(crypto.NONCE_SIZE)
        shift = self.segment_shift
        if packed is None and shift and len(data) > 1 << shift:
            return self._seal_segments(chunk_id, data, nonce, shift)
        stored_len = len(body) + crypto.TAG_SIZE
        header = HEADER.pack(BLOB_MAGIC, BLOB_VERSION, TYPE_DATA, flags, 0, len(data), stored_len, chunk_id, nonce)
        blob = bytearray(HEADER_SIZE + stored_len)
        blob[:HEADER_SIZE] = header
        crypto.seal_into(self._subkey(chunk_id), body, header, nonce, memoryview(blob)[HEADER_SIZE:])
        return blob

    def _seal_segments(self, chunk_id: bytes, data: bytes | memoryview, nonce: bytes, shift: int) -> bytearray:
        """A version 2 blob: each segment of ``data`` sealed on its own (DESIGN.md §5.1)."""
        size = 1 << shift
        count = segment_count(len(data), shift)
        stored_len = len(data) + count * crypto.TAG_SIZE
        header = HEADER.pack(BLOB_MAGIC, SEGMENTED_VERSION, TYPE_DATA, 0, shift, len(data), stored_len, chunk_id,
                             nonce)
        blob = bytearray(HEADER_SIZE + stored_len)
        blob[:HEADER_SIZE] = header
        out = memoryview(blob)
        plain = memoryview(data)
        key = self._subkey(chunk_id)
        at = HEADER_SIZE
        for index in range(count):
            piece = plain[index * size : (index + 1) * size]
            seg_nonce, ad = segment_nonce_and_ad(header, nonce, index, index == count - 1)
            crypto.seal_into(key, piece, ad, seg_nonce, out[at : at + len(piece) + crypto.TAG_SIZE])
            at += len(piece) + crypto.TAG_SIZE
        return blob

    def open(self, blob: bytes | memoryview, expected_id: bytes | None = None, *, rehash: bool = True) -> bytes:
        """Verify and decrypt a whole blob; raises :class:`BlobError` on any mismatch.

        The tag is checked under the subkey of the chunk ID with the header (ID
        included) as associated data, which binds content and ID for anyone without
        the key. ``rehash`` also recomputes the ID from the plaintext, which catches a
        writer that computed a wrong ID; ``check --read-data`` and gc always do it,
        the serving path leaves it out (DESIGN.md §5).
        """
        header = BlobHeader.parse(bytes(blob[:HEADER_SIZE]))
        if expected_id is not None and header.chunk_id != expected_id:
            raise BlobError("blob carries another chunk ID")
        body = memoryview(blob)[HEADER_SIZE:]
        if len(body) != header.stored_len:
            raise BlobError("blob is truncated")
        plain = open_body(self._subkey(header.chunk_id), header, body)
        if header.flags & FLAG_ZSTD:
            try:
                plain = self._decompressor().decompress(plain, max_output_size=header.plain_len)
            except zstandard.ZstdError as exc:
                raise BlobError(f"decompression failed: {exc}") from exc
        if len(plain) != header.plain_len:
            raise BlobError("plaintext length mismatch")
        if rehash and self.chunk_id(plain) != header.chunk_id:
            raise BlobError("content does not match its chunk ID")
        return plain

    def open_range(self, header: BlobHeader, expected_id: bytes, first: int, stop: int,
                   sealed: bytes | memoryview) -> bytes:
        """The verified plaintext of segments ``first..stop-1`` of a version 2 blob with
        this header (as read from the pack at this place), from their sealed bytes.
        Each segment's tag covers the header (so its ID and lengths) as well."""
        if header.chunk_id != expected_id:
            raise BlobError("blob carries another chunk ID")
        if not header.segmented:
            raise BlobError("not a segmented blob")
        return open_segments(AESGCM(self._subkey(header.chunk_id)), header, first, stop, sealed)


def open_body(key: bytes, header: BlobHeader, body: bytes | memoryview) -> bytes:
    """Verify and decrypt a whole blob body (before decompression) under its subkey,
    whichever its layout; :class:`BlobError` if a tag fails."""
    if header.segmented:
        return open_segments(AESGCM(key), header, 0, segment_count(header.plain_len, header.shift), body)
    try:
        return crypto.open_sealed(key, header.nonce, body, header.raw)
    except crypto.DecryptionFailed as exc:
        raise BlobError("authentication tag mismatch (data altered or corrupt)") from exc


@dataclass(frozen=True)
class ScannedBlob:
    offset: int
    header: BlobHeader
    #: the ciphertext and tag, when the pack was scanned with ``bodies=True``
    body: bytes | None = None

    @property
    def total_len(self) -> int:
        return HEADER_SIZE + self.header.stored_len


def scan_pack(stream: BinaryIO, *, bodies: bool = False,
              on_damage: Callable[[int], None] | None = None) -> Iterator[ScannedBlob]:
    """Walk a pack's blobs front to back, with their bodies if ``bodies`` (read in
    turn; else skipped by seeking).

    What it tolerates: a magic torn short (a pack whose magic was never fully written)
    is an empty pack; a torn tail (crash while appending: a short header or body, or a
    header of zeros, bytes a failed fsync lost) ends the walk quietly. A header that is
    neither ends it too, and ``on_damage(offset)`` is told where it stands. A file that
    does not start with the magic raises :class:`BlobError`.
    """
    size = 0 if bodies else stream.seek(0, 2)
    stream.seek(0)
    magic = stream.read(len(PACK_MAGIC))
    if magic != PACK_MAGIC:
        if len(magic) < len(PACK_MAGIC) and PACK_MAGIC.startswith(magic):
            return
        raise BlobError("not a pack file")
    offset = len(PACK_MAGIC)
    while True:
        raw = stream.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            return
        try:
            header = BlobHeader.parse(raw)
        except BlobError:
            if on_damage is not None and raw.count(0) != len(raw):
                on_damage(offset)
            return
        end = offset + HEADER_SIZE + header.stored_len
        body = None
        if bodies:
            body = stream.read(header.stored_len)
            if len(body) < header.stored_len:
                return
        elif end > size:
            return
        else:
            stream.seek(end)
        yield ScannedBlob(offset, header, body)
        offset = end
