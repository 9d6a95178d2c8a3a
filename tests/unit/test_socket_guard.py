"""The unit tier's socket guard (tests/unit/conftest.py) can fail: TCP is blocked, asyncio still runs."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pytest_socket import SocketBlockedError

# pytest-socket warns as well as raising; here the error is the point
pytestmark = pytest.mark.filterwarnings("ignore:A test tried to use socket")


def test_a_tcp_connection_is_blocked() -> None:
    with pytest.raises(SocketBlockedError):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def test_a_tcp_socket_cannot_even_be_made() -> None:
    with pytest.raises(SocketBlockedError, match=r"socket\.socket"):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def test_an_asyncio_server_cannot_listen() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        server.close()

    with pytest.raises(SocketBlockedError):
        asyncio.run(main())


def test_unix_sockets_stay_allowed_for_the_event_loop() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"
    assert asyncio.run(asyncio.sleep(0, result=42)) == 42
