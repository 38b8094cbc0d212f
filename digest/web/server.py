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

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
from waitress.server import create_server  # type: ignore[import-untyped]

from digest.config import Web
from digest.web.front import FrontChannel, Lane
from digest.web.oneclick import EXTENSION as ONE_CLICK


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


def make_server(app: Flask, settings: Web, *, listener: socket.socket, threads: int) -> Any:
    """A waitress server for `app` (not yet running) on `listener`, with `settings`'
    connection limit, that answers plain one-click POSTs itself (`front`)."""
    for name in ("waitress", "waitress.queue"):
        logging.getLogger(name).addFilter(EveryFew(10.0))
    server = create_server(
        app, sockets=[listener], threads=threads, connection_limit=settings.connection_limit
    )
    server.channel_class = FrontChannel
    server.waitress_channel = BurstChannel
    server.lane = Lane(
        app.extensions[ONE_CLICK],
        wake=server.pull_trigger,
        ident=server.adj.ident,
        wait=settings.write_wait,
    )
    return server


def listen(host: str, port: int) -> socket.socket:
    """The bound, listening socket every serving process accepts on (port 0: a free one)."""
    return socket.create_server((host, port), backlog=1024)


def run_processes(count: int, run: Callable[[], None], started: Callable[[], None]) -> int:
    """Run `run` in `count` forked processes (each accepting on the socket they inherit,
    so the kernel spreads connections over them, and each with a GIL of its own) until
    SIGTERM or Ctrl-C, which is passed on to them; returns the worst exit status.
    `started` is called once every process is forked.

    A process that dies is not restarted: the others keep serving, and the status says so.
    """
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent passes Ctrl-C on
            code = 0
            try:
                run()
            except BaseException:  # noqa: BLE001 - any end of a serving child is its exit
                code = 1
            os._exit(code)
        children.append(pid)
    started()

    def stop(signum: int, _frame: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    worst = 0
    try:
        for pid in children:
            _pid, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            worst = max(worst, 0 if code == -signal.SIGTERM else abs(code))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return worst
