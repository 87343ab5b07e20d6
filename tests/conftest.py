"""Shared pytest setup: cheap key derivation for every repository a test creates."""

import os

# Argon2id at its production cost takes ~0.2 s per key slot; tests create hundreds.
os.environ.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")
