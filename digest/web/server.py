"""waitress set up for bursts of small requests, such as a mail provider's one-click POSTs.

Two things waitress does by default cost a burst most of its CPU on a small machine:

- Its main loop asks every open connection, on every pass, whether it wants to read or
  write, and treats a connection whose answer a worker thread is sending at that moment
  as ready to write. The loop then spins, holding the GIL the sending thread needs to
  finish (about 25 passes a request, measured). `BurstChannel` says "not now" while a
  worker holds the connection's output; the worker sends its output itself, and wakes
  the loop if anything is left.
- It logs a warning for every request that waits for a thread, and for every pass over
  the connection limit; `EveryFew` keeps one of those in 10 s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
from waitress.server import create_server  # type: ignore[import-untyped]

from digest.config import Web


class BurstChannel(HTTPChannel):  # type: ignore[misc]
    def writable(self) -> bool:
        # HTTPChannel.writable, asked of every connection on every pass: the cheap test first
        if self.will_close or self.close_when_flushed:
            return True
        if not self.total_outbufs_len:
            return False
        if self.requests:
            # A worker thread holding the output is sending it (HTTPChannel.write_soon);
            # if it cannot send it all, it pulls the trigger and the loop asks again.
            if not self.outbuf_lock.acquire(False):
                return False
            self.outbuf_lock.release()
        return True


class EveryFew(logging.Filter):
    """Lets one warning through per `seconds`; other levels always pass."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._seconds = seconds
        self._clock = clock
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._seconds
        return True


def make_server(app: Any, settings: Web, *, host: str, port: int, threads: int) -> Any:
    """A waitress server for `app` (not yet running), with `settings`' connection limit."""
    for name in ("waitress", "waitress.queue"):
        logging.getLogger(name).addFilter(EveryFew(10.0))
    server = create_server(
        app, host=host, port=port, threads=threads, connection_limit=settings.connection_limit
    )
    server.channel_class = BurstChannel
    return server
