"""Unit tests open no sockets: every test here runs with Python's sockets disabled (pytest-socket).

Before each test under tests/unit is set up (so its fixtures are guarded too), ``socket.socket``,
``socket.getaddrinfo`` and ``socket.gethostbyname`` are replaced by pytest-socket's guards: creating
an AF_INET/AF_INET6 socket, or resolving a name, raises ``pytest_socket.SocketBlockedError``.
AF_UNIX sockets stay allowed, because asyncio's event loop makes a Unix socket pair for its
self-pipe. pytest-socket's own ``pytest_runtest_teardown`` restores the real sockets after each
test, and this hook only runs for items under tests/unit (a conftest's hooks are per directory),
so tests/integration, which must open sockets, is not affected, even in the same session.

A unit test may not opt out: the ``enable_socket`` marker and the ``socket_enabled`` fixture are
refused here. A test that needs the network belongs in tests/integration.

The guard only sees sockets made through Python's ``socket`` module. gRPC's C core (grpcio) opens
its sockets outside Python, so a ``grpc.server``/``grpc.aio.server`` with ``add_secure_port`` or
``add_insecure_port``, or a channel that connects, goes unnoticed by pytest-socket. By convention,
then, every test that starts a gRPC server or connects a channel lives in tests/integration; so do
subprocesses' sockets, which this process cannot see either.
"""

from __future__ import annotations

import pytest
from pytest_socket import disable_socket


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("enable_socket") or "socket_enabled" in getattr(item, "fixturenames", ()):
        pytest.fail(f"{item.nodeid}: unit tests may not enable sockets; move the test to tests/integration",
                    pytrace=False)
    disable_socket(allow_unix_socket=True)
