"""A loopback TCP proxy that can cut its connections silently (the chaos suite's nemesis).

``cut()`` stops forwarding in both directions without closing a socket: each side's
peer sees a connection that is up but silent, as with a dead switch or Toxiproxy's
``timeout`` toxic (no FIN, no RST). New connections made while cut are accepted and held,
silent too. ``restore()`` resumes forwarding whatever was held. ``close()`` stops the
proxy and closes every socket.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from dataclasses import dataclass, field

_CHUNK = 64 * 1024
_POLL_S = 0.05


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    closed: bool = False


@dataclass
class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``."""

    target_host: str
    target_port: int
    port: int = 0
    _listener: socket.socket | None = None
    _pairs: list[_Pair] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _flowing: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Proxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(_POLL_S * 4)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._flowing.set()
        threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True).start()
        return self

    @property
    def is_cut(self) -> bool:
        return not self._flowing.is_set()

    def cut(self) -> None:
        """Stop forwarding; every socket stays open."""
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()

    def connections(self) -> int:
        with self._lock:
            return sum(not pair.closed for pair in self._pairs)

    def close(self) -> None:
        self._stop.set()
        self._flowing.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            _close(pair)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((self.target_host, self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        pair = _Pair(client, upstream)
        with self._lock:
            self._pairs = [p for p in self._pairs if not p.closed]
            self._pairs.append(pair)
        try:
            self._pump(pair)
        finally:
            _close(pair)

    def _pump(self, pair: _Pair) -> None:
        peers = {pair.client: pair.upstream, pair.upstream: pair.client}
        while not self._stop.is_set():
            if not self._flowing.is_set():
                # Silent: read nothing, write nothing, close nothing.
                self._flowing.wait(_POLL_S)
                continue
            try:
                readable, _, _ = select.select(list(peers), [], [], _POLL_S)
            except (OSError, ValueError):  # closed under us by close()
                return
            for source in readable:
                try:
                    data = source.recv(_CHUNK)
                except OSError:
                    return
                if not data:
                    return
                try:
                    peers[source].sendall(data)
                except OSError:
                    return


def _close(pair: _Pair) -> None:
    pair.closed = True
    for sock in (pair.client, pair.upstream):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
