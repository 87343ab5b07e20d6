"""Tests of the storage engine (davbackup/ without cli/ and client/): repository, catalog, packs, history, maintenance.

Shared fixtures come from the modules registered in ``tests/conftest.py``."""
