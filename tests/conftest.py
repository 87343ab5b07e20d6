"""Shared pytest setup: cheap key derivation for every repository a test creates, and
the fixture modules every area uses.

The tests are organised like the code: ``core/`` (the storage engine), ``provider/``
(the WsgiDAV layer over a real server), ``resume/`` (resumable uploads), ``interop/``
(real clients) and ``client/`` (the bundled client). Shared helpers live here at the
top (``*_fixtures.py``, ``services.py``, ...)."""

import os

import pytest

# Argon2id at its production cost takes ~0.2 s per key slot; tests create hundreds.
os.environ.setdefault("DAVBACKUP_KDF_MEMORY_KIB", "1024")

# Fixture modules are registered once, here, instead of being imported by name into
# each test module: tests ask for a fixture by parameter name and pytest finds it.
# The throwaway PostgreSQL and Ceph RGW (tests/services.py) are session fixtures, so
# every module shares one instance; only tests that ask for them start them. A test
# module may define a fixture of the same name (``repo``, ``alice``, ``server``),
# which then wins inside that module.
pytest_plugins = [
    "tests.services",
    "tests.server_fixtures",  # dav_server, shared_dav_server (one per test module)
    "tests.core_fixtures",  # repo, small_repo, ns, small_ns
    "tests.provider_http_helpers",  # server, alice, base
    "tests.fault_fixtures",  # fault_control (fault rules for repositories opened in a test)
    "tests.interop_fixtures",  # public_tmp (davfs2 mounts, in interop/ and cluster/)
]


def pytest_generate_tests(metafunc):  # type: ignore[no-untyped-def]
    """Modules with ``CATALOG_BACKENDS`` run every test that uses a repository (the
    ``catalog_url`` fixture below) once per catalog backend."""
    backends = getattr(metafunc.module, "CATALOG_BACKENDS", None)
    if backends and "catalog_url" in metafunc.fixturenames:
        metafunc.parametrize("catalog_url", backends, indirect=True)


@pytest.fixture
def catalog_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the repository directory), or a fresh PostgreSQL database.

    SQLite unless the test module lists ``CATALOG_BACKENDS = ("sqlite", "postgresql")``:
    then each of its tests that uses a repository runs against both."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        return None
    server = request.getfixturevalue("postgres_server")
    return str(server.url(server.create_database()))
