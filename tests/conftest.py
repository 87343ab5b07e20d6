"""Shared pytest setup: cheap key derivation for every repository a test creates."""

import os

# Argon2id at its production cost takes ~0.2 s per key slot; tests create hundreds.
os.environ.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")

# The throwaway PostgreSQL and Ceph RGW (tests/services.py) are session fixtures: they
# must be registered once, here, so that every module shares one instance (a module
# importing them by name would get its own). Only tests that ask for them start them.
pytest_plugins = ["tests.services"]
