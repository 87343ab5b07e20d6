"""Tests of the bundled client (davbackup/client/, davbackup upload/download) and the C++ libcurl example.

Shared fixtures come from the modules registered in ``tests/conftest.py``."""
