"""Tests of several davbackup nodes on a throwaway PostgreSQL and Ceph RGW (issue 11):
real ``davbackup serve --catalog … --packs …`` processes driven by real clients.

Shared fixtures come from the modules registered in ``tests/conftest.py``; the
cluster helpers are in ``tests/cluster_fixtures.py``."""
