"""A loopback TCP relay that records both directions in the order it reads them, so a test
can check the bytes a client puts on the wire (dot-stuffing, line ends) and when it
waits for an answer (pipelining)."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class WireTap:
    """Relays 127.0.0.1:`port` to `target`; `log` holds ("client" | "server", bytes) reads."""

    target: tuple[str, int]
    log: list[tuple[str, bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def client_bytes(self) -> bytes:
        with self._lock:
            return b"".join(data for side, data in self.log if side == "client")

    def events(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.log)

    def close(self) -> None:
        self._stop.set()
        for thread in [self._accepting, *self._threads]:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        deadline = time.monotonic() + 60  # no test needs the relay longer
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._relay, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _relay(self, client: socket.socket) -> None:
        server = socket.create_connection(self.target, timeout=5)
        sides = {client: ("client", server), server: ("server", client)}
        deadline = time.monotonic() + 60
        with selectors.DefaultSelector() as selector, client, server:
            for sock in sides:
                selector.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set() and time.monotonic() < deadline:
                for key, _ in selector.select(0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    name, other = sides[sock]
                    try:
                        data = sock.recv(1 << 16)
                    except OSError:
                        data = b""
                    if not data:
                        return  # one side closed: close both
                    with self._lock:
                        self.log.append((name, data))
                    other.sendall(data)
