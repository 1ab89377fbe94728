"""The chaos proxy: it forwards, and a cut silences a connection without closing it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.chaos.proxy import Proxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback echo server."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    stop.set()
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)


def test_a_cut_is_silent_and_restore_resumes(echo_port: int) -> None:
    """Bytes flow; during a cut nothing arrives and nothing is closed; after restore the
    held bytes arrive on the same connection."""
    proxy = Proxy("127.0.0.1", echo_port).start()
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        client.sendall(b"ping")
        assert client.recv(16) == b"ping"
        proxy.cut()
        client.sendall(b"held")
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(16)  # silent: no data, and no EOF (which would return b"")
        assert proxy.connections() == 1
        proxy.restore()
        client.settimeout(2)
        assert client.recv(16) == b"held"
        client.close()
    finally:
        proxy.close()
