"""Tests of the WsgiDAV layer (provider/) over a real server on a real socket: HTTP semantics, limits, history, web page, faults, soak.

Shared fixtures come from the modules registered in ``tests/conftest.py``."""
