"""Whole-file digests a client promises with an upload (``Repr-Digest`` SHA-256,
ownCloud's ``OC-Checksum`` SHA-1), checked against the bytes written before the
version is linked. Used by plain PUTs and by every resumable protocol."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from davbackup.errors import DigestMismatch
from davbackup.writer import FileWriter


@dataclass(frozen=True)
class Digests:
    """Whole-file digests the client promised (raw bytes)."""

    sha256: bytes | None = None
    sha1: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.sha256 or self.sha1)


def verify_digests(digests: Digests | None, writer: FileWriter, path: str) -> str | None:
    """Check the promised digests against the bytes written; raise on a mismatch.

    When the client sent an ownCloud SHA-1, returns ``"SHA1:<hex> MD5:<hex>"`` (MD5
    computed in the same pass) to keep with the version: rclone's owncloud vendor
    compares MD5 first."""
    if not digests:
        return None
    h256 = hashlib.sha256() if digests.sha256 else None
    h1 = hashlib.sha1() if digests.sha1 else None
    hmd5 = hashlib.md5() if digests.sha1 else None
    for data in writer.iter_content(path):
        for h in (h256, h1, hmd5):
            if h is not None:
                h.update(data)
    if h256 and h256.digest() != digests.sha256:
        raise DigestMismatch(f"{path}: SHA-256 of the received bytes does not match Repr-Digest")
    if h1 and h1.digest() != digests.sha1:
        raise DigestMismatch(f"{path}: SHA-1 of the received bytes does not match OC-Checksum")
    if h1 is not None and hmd5 is not None:
        return f"SHA1:{h1.hexdigest()} MD5:{hmd5.hexdigest()}"
    return None
