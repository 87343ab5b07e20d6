"""Whole-file digests a client sends with an upload: ``Repr-Digest`` (RFC 9530) and
``OC-Checksum`` (ownCloud), parsed without I/O.

Whole PUTs (:mod:`provider.resources`) and the resume protocols
(:mod:`provider.resumable`) check the assembled file against them before it becomes
current. Unknown algorithms are ignored; a malformed value is a 400, because a
digest the client sent but the server ignored would defeat its purpose.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from wsgidav.dav_error import DAVError

from davbackup.digests import Digests

Environ = dict[str, Any]

_REPR_DIGEST_MEMBER = re.compile(r"^\s*([a-z][a-z0-9_.*-]*)\s*=\s*:([A-Za-z0-9+/=]*):\s*(?:;.*)?$")


def parse_digests(environ: Environ) -> Digests | None:
    """Whole-file digests from ``Repr-Digest`` (RFC 9530) and ``OC-Checksum`` (ownCloud).

    Unknown algorithms are ignored; a malformed value is a 400.
    """
    sha256 = sha1 = None
    repr_digest = environ.get("HTTP_REPR_DIGEST")
    if repr_digest:
        for member in repr_digest.split(","):
            match = _REPR_DIGEST_MEMBER.match(member)
            if not match:
                raise DAVError(400, f"malformed Repr-Digest member {member.strip()!r}")
            algorithm, encoded = match.groups()
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise DAVError(400, f"Repr-Digest {algorithm}: invalid base64") from None
            if algorithm == "sha-256":
                if len(raw) != 32:
                    raise DAVError(400, "Repr-Digest sha-256 must be 32 bytes")
                sha256 = raw
    checksum = environ.get("HTTP_OC_CHECKSUM")
    if checksum:
        for token in checksum.split():
            algorithm, _, hexvalue = token.partition(":")
            if algorithm.upper() != "SHA1":
                continue
            try:
                raw = bytes.fromhex(hexvalue)
            except ValueError:
                raise DAVError(400, f"OC-Checksum: invalid hex {hexvalue!r}") from None
            if len(raw) != 20:
                raise DAVError(400, "OC-Checksum SHA1 must be 20 bytes")
            sha1 = raw
    if sha256 is None and sha1 is None:
        return None
    return Digests(sha256=sha256, sha1=sha1)
