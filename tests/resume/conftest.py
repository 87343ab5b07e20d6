"""Tests of the resumable upload protocols (provider/resumable/): range PUT, SabreDAV PATCH, the IETF draft.

Shared fixtures come from the modules registered in ``tests/conftest.py``."""
