"""Cryptographic primitives, each under a stable name (DESIGN.md §3 keys, §5 blobs).

- ``blake3-keyed``: chunk IDs, name hashes and per-chunk subkeys (keyed BLAKE3).
- ``aes-256-gcm``: authenticated encryption of chunks, names, properties, key slots.
- ``argon2id``: derives the key-encryption key from a passphrase.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16


class DecryptionFailed(Exception):
    """Internal: the AEAD tag did not verify. Callers turn it into a named error."""


def keyed_hash(key: bytes, data: bytes | bytearray | memoryview, size: int = 32) -> bytes:
    """BLAKE3 in keyed mode: a MAC / PRF of ``data`` under a 32-byte key.

    Single-threaded on purpose: large writes already overlap chunk processing with
    receiving on a helper thread, and BLAKE3's own threads only competed with it
    (measured: more CPU per GiB and slower uploads on two cores)."""
    return blake3.blake3(data, key=key, max_threads=1).digest(size)


def derive_key(master: bytes, context: str) -> bytes:
    """A 32-byte subkey of ``master`` for one purpose (BLAKE3 keyed, domain-separated)."""
    return keyed_hash(master, b"davbackup-subkey\x00" + context.encode("ascii"))


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def seal(key: bytes, plaintext: bytes | memoryview, associated: bytes, nonce: bytes | None = None) -> tuple[bytes, bytes]:
    """Encrypt with AES-256-GCM; returns ``(nonce, ciphertext_with_tag)``."""
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes | memoryview, associated: bytes) -> bytes:
    """Decrypt and verify; raises :class:`DecryptionFailed` on any mismatch."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated)
    except InvalidTag as exc:
        raise DecryptionFailed() from exc


def seal_into(key: bytes, plaintext: bytes | memoryview, associated: bytes, nonce: bytes,
              out: memoryview) -> None:
    """Encrypt with AES-256-GCM into ``out`` (exactly ``len(plaintext) + TAG_SIZE``
    bytes): the ciphertext goes where it is needed, e.g. after a header, instead of
    into a new object that is then copied there."""
    cipher = AESGCM(key)
    encrypt_into = getattr(cipher, "encrypt_into", None)  # cryptography >= 45
    if encrypt_into is not None:
        encrypt_into(nonce, plaintext, associated, out)
    else:
        out[:] = cipher.encrypt(nonce, plaintext, associated)


def seal_small(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """Encrypt a small value (a name, a property) into ``nonce || ciphertext``."""
    nonce, ct = seal(key, plaintext, associated)
    return nonce + ct


def open_small(key: bytes, blob: bytes, associated: bytes) -> bytes:
    """Open a ``seal_small`` value. Names and properties use a few long-lived keys, so
    their cipher objects are kept (a listing opens one name per entry; setting up the
    key schedule cost twice the decryption)."""
    try:
        return _small_cipher(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], associated)
    except InvalidTag as exc:
        raise DecryptionFailed() from exc


@functools.lru_cache(maxsize=8)
def _small_cipher(key: bytes) -> AESGCM:
    return AESGCM(key)


def small_opener(key: bytes) -> Callable[[bytes, bytes, bytes], bytes]:
    """``decrypt(nonce, ciphertext, associated)`` of the cipher :func:`open_small` keeps for
    ``key``, for loops that open many values; raises ``InvalidTag`` (the caller then asks
    :func:`open_small`'s users for their error)."""
    return _small_cipher(key).decrypt


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters, stored in each key slot."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    def derive(self, passphrase: str, salt: bytes) -> bytes:
        kdf = Argon2id(
            salt=salt,
            length=KEY_SIZE,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        )
        return kdf.derive(passphrase.encode("utf-8"))

    def to_json(self) -> dict[str, int | str]:
        return {
            "name": "argon2id",
            "memory_kib": self.memory_kib,
            "iterations": self.iterations,
            "lanes": self.lanes,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "KdfParams":
        if data.get("name") != "argon2id":
            raise ValueError(f"unknown KDF {data.get('name')!r}")
        return cls(
            memory_kib=int(data["memory_kib"]),  # type: ignore[call-overload]
            iterations=int(data["iterations"]),  # type: ignore[call-overload]
            lanes=int(data["lanes"]),  # type: ignore[call-overload]
        )


def kdf_params_from_env() -> KdfParams:
    """Default KDF cost; ``DAVBACKUP_KDF_MEMORY_KIB`` lowers it (tests only)."""
    mem = os.environ.get("DAVBACKUP_KDF_MEMORY_KIB")
    if mem:
        return KdfParams(memory_kib=int(mem), iterations=1, lanes=1)
    return KdfParams()
