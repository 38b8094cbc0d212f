"""One-click POSTs answered at the door of waitress, in batches, without a WSGI request.

Under waitress a one-click POST costs about 1 ms of CPU, most of it the server's own
machinery: a channel with its locks and buffers, the general parser, a task handed to a
worker thread, the WSGI environment, the response built header by header, and the main
loop passing over every open connection once per accepted one. A burst of 200 is then
200 ms of one core before any waiting.

Here every new connection starts as a `FrontChannel`, which only reads. When its bytes
are a whole one-click POST in the plainest form (`wire.read_one_click`), the POST goes to
the `Lane`: one thread that takes everything queued, checks the tokens, commits the
unsubscribes in one synced transaction, and hands each connection its answer, which the
main loop sends. Anything else (any other request, or a one-click in another form) is
handed, with the bytes read so far, to a waitress channel, as if waitress had read them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import wasyncore  # type: ignore[import-untyped]
from waitress.utilities import build_http_date  # type: ignore[import-untyped]

from digest.web.oneclick import HEADERS, OneClick
from digest.web.wire import INCOMPLETE, OneClickRequest, answer, read_one_click


class FrontChannel(wasyncore.dispatcher):  # type: ignore[misc]
    """A connection until it shows a one-click POST (answered by the lane) or anything
    else (handed to `server.waitress_channel`)."""

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        self.server = server
        self.adj = adj
        self.addr = addr
        self.read_so_far = b""
        self.reply = b""  # set by the lane's thread, sent by the main loop
        self.close_after = False
        self.requests: list[OneClickRequest] = []  # waitress's maintenance spares busy ones
        self.will_close = False  # waitress's maintenance sets it on an idle connection
        self.last_activity = time.time()
        wasyncore.dispatcher.__init__(self, sock, map=map)
        self.connected = True

    def add_channel(self, map: Any = None) -> None:
        wasyncore.dispatcher.add_channel(self, map)
        self.server.active_channels[self._fileno] = self

    def del_channel(self, map: Any = None) -> None:
        fd = self._fileno
        wasyncore.dispatcher.del_channel(self, map)
        self.server.active_channels.pop(fd, None)

    def readable(self) -> bool:
        return not (self.requests or self.will_close)

    def writable(self) -> bool:
        return bool(self.reply) or self.will_close

    def handle_read(self) -> None:
        try:
            data = self.recv(self.adj.recv_bytes)
        except OSError:
            self.handle_close()
            return
        if not data:  # recv closed the channel already
            return
        self.last_activity = time.time()
        self.read_so_far += data
        found = read_one_click(self.read_so_far)
        if found is INCOMPLETE:
            return
        if not isinstance(found, OneClickRequest):
            self._hand_over()
            return
        self.read_so_far = b""
        self.requests = [found]
        self.server.lane.submit(self, found)

    def answer(self, data: bytes, *, close: bool) -> None:
        """From the lane's thread: send `data`, then close or read the next request."""
        self.close_after = close
        self.reply = data

    def handle_write(self) -> None:
        if self.reply:
            sent = self.send(self.reply)
            self.reply = self.reply[sent:]
            if self.reply or not self.connected:
                return
            self.last_activity = time.time()
            self.requests = []
            if not self.close_after:
                return
        self.handle_close()

    def handle_close(self) -> None:
        self.close()

    def _hand_over(self) -> None:
        self.del_channel()  # out of the loop's map; the socket stays open, for waitress
        channel = self.server.waitress_channel(
            self.server, self.socket, self.addr, self.adj, self._map
        )
        channel.received(self.read_so_far)


class Lane:
    """The thread that answers queued one-click POSTs, a batch at a time.

    `one_click` gives each token's status and page once its unsubscribe is durable;
    `wake` rouses the main loop to send what is ready; `ident` is the Server header. Each
    POST waits at most `wait` seconds from its arrival for a locked database, then gets
    503 with nothing written.
    """

    def __init__(
        self, one_click: OneClick, *, wake: Callable[[], None], ident: str, wait: float
    ) -> None:
        self._one_click = one_click
        self._wake = wake
        self._ident = ident
        self._wait = wait
        self._ready = threading.Condition()
        self._queue: list[tuple[FrontChannel, OneClickRequest, float]] = []
        self._thread = threading.Thread(target=self._run, name="one-click", daemon=True)
        self._thread.start()

    def submit(self, channel: FrontChannel, request: OneClickRequest) -> None:
        with self._ready:
            self._queue.append((channel, request, time.monotonic()))
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                batch, self._queue = self._queue, []
            try:
                self._answer(batch)
            except Exception:  # noqa: BLE001 - the lane must keep serving
                self._one_click.logger.exception("one-click unsubscribes failed")
                self._send(batch, [self._one_click.busy] * len(batch))

    def _answer(self, batch: list[tuple[FrontChannel, OneClickRequest, float]]) -> None:
        now = time.monotonic()
        late = [now - arrived >= self._wait for _c, _r, arrived in batch]
        live = [entry for entry, over in zip(batch, late, strict=True) if not over]
        results: list[tuple[str, bytes]] = []
        if live:
            wait = min(arrived for _c, _r, arrived in live) + self._wait - now
            results = self._one_click.answer_many([r.token for _c, r, _a in live], wait=wait)
        done = iter(results)
        self._send(batch, [self._one_click.busy if over else next(done) for over in late])

    def _send(
        self,
        batch: list[tuple[FrontChannel, OneClickRequest, float]],
        results: list[tuple[str, bytes]],
    ) -> None:
        date = build_http_date(time.time())
        for (channel, request, _arrived), (status, body) in zip(batch, results, strict=True):
            data = answer(request, status, HEADERS, body, date=date, server=self._ident)
            channel.answer(data, close=not request.keep_alive)
        self._wake()
