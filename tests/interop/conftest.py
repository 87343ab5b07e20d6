"""Tests of real WebDAV clients against a real server: litmus, rclone, davfs2, cadaver, curl, webdavclient3, GVfs, replayed desktop clients.

Shared fixtures come from the modules registered in ``tests/conftest.py``; the
client helpers and the mount tests' world-readable temp dir (``public_tmp``, which
the cluster tests use too) are in ``tests/interop_fixtures.py``."""
