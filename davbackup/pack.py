"""Pack files: append-only containers of encrypted blobs (DESIGN.md §5).

A pack starts with an 8-byte magic and is followed by blobs. Every blob carries a
fixed 64-byte header and its ciphertext::

    offset size field
    0      4    magic b"DBLB"
    4      1    format version (1)
    5      1    blob type (1 = file data chunk)
    6      1    flags (bit 0: zstd-compressed plaintext)
    7      1    reserved, 0
    8      4    plaintext length (big endian)
    12     4    ciphertext length, tag included (big endian)
    16     32   chunk ID
    48     12   nonce
    60     4    reserved, 0
    64     n    AES-256-GCM ciphertext || 16-byte tag

The whole header is the AEAD associated data, so the ID, type, version, flags and
lengths are authenticated together with the contents. A pack is thus readable
without the catalog: :func:`scan_pack` rebuilds the chunk index from it.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import zstandard

from davbackup import crypto

PACK_MAGIC = b"DAVBPAK1"
BLOB_MAGIC = b"DBLB"
BLOB_VERSION = 1
HEADER = struct.Struct(">4sBBBxII32s12s4x")
HEADER_SIZE = HEADER.size  # 64
TYPE_DATA = 1
FLAG_ZSTD = 1
MAX_BLOB = 64 * 1024 * 1024
#: compression contexts kept for reuse by a codec, whichever thread used them
IDLE_COMPRESSORS = 4

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

    @classmethod
    def parse(cls, raw: bytes) -> "BlobHeader":
        if len(raw) != HEADER_SIZE:
            raise BlobError("truncated blob header")
        magic, version, blob_type, flags, plain_len, stored_len, chunk_id, nonce = HEADER.unpack(raw)
        if magic != BLOB_MAGIC:
            raise BlobError("bad blob magic")
        if version != BLOB_VERSION:
            raise BlobError(f"unknown blob version {version}")
        if stored_len < crypto.TAG_SIZE or stored_len > MAX_BLOB or plain_len > MAX_BLOB:
            raise BlobError("implausible blob length")
        return cls(blob_type, flags, plain_len, stored_len, chunk_id, nonce, raw)


class BlobCodec:
    """Turns chunks into sealed blobs and back, checking the chunk ID on the way out."""

    def __init__(self, subkey_base: bytes, id_key: bytes, compression_level: int = 3) -> None:
        self._subkey_base = subkey_base
        self._id_key = id_key
        self._level = compression_level
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
        stored_len = len(body) + crypto.TAG_SIZE
        header = HEADER.pack(BLOB_MAGIC, BLOB_VERSION, TYPE_DATA, flags, len(data), stored_len, chunk_id, nonce)
        blob = bytearray(HEADER_SIZE + stored_len)
        blob[:HEADER_SIZE] = header
        crypto.seal_into(self._subkey(chunk_id), body, header, nonce, memoryview(blob)[HEADER_SIZE:])
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
        try:
            plain = crypto.open_sealed(self._subkey(header.chunk_id), header.nonce, body, header.raw)
        except crypto.DecryptionFailed as exc:
            raise BlobError("authentication tag mismatch (data altered or corrupt)") from exc
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
