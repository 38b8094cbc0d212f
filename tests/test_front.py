"""One-click POSTs answered at the door of `digest serve`: a burst of 200, the same bytes
as waitress's answer, keep-alive, requests in pieces, everything else handed to waitress,
and the answer held back until its commit."""

from __future__ import annotations

import itertools
import logging
import re
import selectors
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import SECRET
from serving import ONE_CLICK, post, readers, rows, serving
from sqlalchemy import text

from digest.store import Store
from digest.tokens import make_token
from digest.web.front import Lane
from digest.web.wire import INCOMPLETE, OneClickRequest, read_one_click

DATE = re.compile(rb"\r\nDate: [^\r]*")


def one_click(token: str, *, version: str = "1.1", connection: str | None = "close") -> bytes:
    head = (
        f"POST /u/{token} HTTP/{version}\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(ONE_CLICK)}\r\n"
    )
    if connection:
        head += f"Connection: {connection}\r\n"
    return (head + "\r\n").encode() + ONE_CLICK


def chunked(token: str) -> bytes:
    """A one-click with a chunked body: a form the door leaves to waitress."""
    head = one_click(token).split(b"\r\n\r\n")[0]
    head = head.replace(b"Content-Length: 26", b"Transfer-Encoding: chunked")
    return head + b"\r\n\r\n1a\r\n" + ONE_CLICK + b"\r\n0\r\n\r\n"


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send `request` on an open connection; the one answer (by its Content-Length)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    assert len(body) == length  # nothing more than the one answer
    return head + b"\r\n\r\n" + body


def until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def burst(port: int, requests: list[bytes]) -> list[bytes]:
    """Every request at once, each on its own connection, from one thread; the answers."""
    selector = selectors.DefaultSelector()
    answers: list[list[bytes]] = [[] for _ in requests]
    for i in range(len(requests)):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE, i)
    left, deadline = len(requests), time.monotonic() + 60
    while left and time.monotonic() < deadline:
        for key, events in selector.select(1.0):
            sock, i = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            if events & selectors.EVENT_WRITE:
                sock.sendall(requests[i])
                selector.modify(sock, selectors.EVENT_READ, i)
            elif chunk := sock.recv(65536):
                answers[i].append(chunk)
            else:
                selector.unregister(sock)
                sock.close()
                left -= 1
    assert left == 0
    selector.close()
    return [b"".join(a) for a in answers]


def test_a_burst_of_200_one_click_posts_unsubscribes_every_reader(
    project: Path, store: Store
) -> None:
    many = readers(store, 200)
    tokens = {r.id: make_token(SECRET, "unsubscribe", r.id or 0, e="weekly/2026-W48") for r in many}
    with serving(project) as (port, _proc):
        answers = burst(port, [one_click(tokens[r.id]) for r in many])
    for reader, answer in zip(many, answers, strict=True):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"), head
        assert b"\r\nContent-Security-Policy: default-src 'none';" in head
        assert head.endswith(b"\r\nX-Frame-Options: DENY") and b"Set-Cookie" not in head
        assert reader.email.encode() in body and b"(The Week in Review)" in body
    assert {v[:2] for v in rows(store).values()} == {("unsubscribed", "one-click")}


def test_the_door_answers_byte_for_byte_as_waitress_does(project: Path, store: Store) -> None:
    """With a query string the POST goes to waitress and Flask (the door takes none); the
    plain one is answered at the door. Both answers are the same bytes but for the Date
    header, for a good and a bad link, in HTTP/1.0 and 1.1, closing or kept alive."""
    (ana,) = readers(store, 1)
    good = make_token(SECRET, "unsubscribe", ana.id or 0)
    bad = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    forms = [("1.1", "close"), ("1.1", None), ("1.1", "keep-alive"), ("1.0", None),
             ("1.0", "keep-alive")]  # fmt: skip
    with serving(project) as (port, _proc):
        for (version, connection), token in itertools.product(forms, (good, bad)):
            answers = []
            for path in (f"{token}?from=mail", token):
                request = one_click(path, version=version, connection=connection)
                assert isinstance(read_one_click(request), OneClickRequest) == (path == token)
                with connect(port) as sock:
                    answers.append(exchange(sock, request))
            waitress, door = (DATE.sub(b"", a) for a in answers)
            assert door == waitress
            assert door.startswith(f"HTTP/{version} {200 if token == good else 400} ".encode())
    assert rows(store)[ana.id or 0][:2] == ("unsubscribed", "one-click")


def test_a_kept_alive_connection_serves_one_clicks_then_any_other_request(
    project: Path, store: Store
) -> None:
    ana, ben = readers(store, 2)
    with serving(project) as (port, _proc), connect(port) as sock:
        for reader in (ana, ben):
            token = make_token(SECRET, "unsubscribe", reader.id or 0)
            answer = exchange(sock, one_click(token, connection=None))
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection:" not in answer
            assert reader.email.encode() in answer
        health = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert health.startswith(b"HTTP/1.1 200 OK\r\n") and b'"status":"ok"' in health
        assert b"\r\nX-Frame-Options: DENY\r\n" in health
    assert {v[:2] for v in rows(store).values()} == {("unsubscribed", "one-click")}


def test_a_one_click_arriving_in_pieces_is_answered_once_whole(project: Path, store: Store) -> None:
    (ana,) = readers(store, 1)
    request = one_click(make_token(SECRET, "unsubscribe", ana.id or 0))
    with serving(project) as (port, _proc), connect(port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (request[:5], request[5:40], request[40:-10], request[-10:]):
            sock.sendall(piece)
            time.sleep(0.05)
        answer = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and ana.email.encode() in answer
    assert rows(store)[ana.id or 0][:2] == ("unsubscribed", "one-click")


def test_other_requests_and_the_pages_own_form_go_to_waitress_and_flask(
    project: Path, store: Store
) -> None:
    ana = readers(store, 1)[0]
    token = make_token(SECRET, "unsubscribe", ana.id or 0)
    with serving(project) as (port, _proc):
        with connect(port) as sock:
            sock.sendall(f"GET /u/{token} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
            page = until_closed(sock)
        assert page.startswith(b"HTTP/1.1 200 OK\r\n") and b"<form" in page
        assert rows(store)[ana.id or 0][:2] == ("active", "")
        answer = post(port, f"/u/{token}", b"via=page&topic=tech")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and ana.email.encode() in answer
    assert rows(store)[ana.id or 0][:2] == ("unsubscribed", "unsubscribe page")


def test_a_one_click_is_answered_only_once_its_unsubscribe_committed(
    project: Path, store: Store
) -> None:
    """Another writer holds the lock: no answer while it does; once it lets go, the POST
    commits and then gets its 200. Held past web.write_wait, the POST gets 503 and the
    row is as it was."""
    ana, ben = readers(store, 2)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE subscribers SET name = 'Held' WHERE id IN (:a, :b)"),
                         {"a": ana.id, "b": ben.id})  # fmt: skip
            holding.set()
            release.wait(30)

    with serving(project, write_wait=1.0) as (port, _proc):
        writer = threading.Thread(target=hold)
        writer.start()
        try:
            assert holding.wait(10)
            late = post(port, f"/u/{make_token(SECRET, 'unsubscribe', ben.id or 0)}")
            with connect(port) as sock:
                sock.sendall(one_click(make_token(SECRET, "unsubscribe", ana.id or 0)))
                time.sleep(0.3)
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)  # nothing yet: the unsubscribe has not committed
                assert rows(store)[ana.id or 0][:2] == ("active", "")
                release.set()
                sock.setblocking(True)
                answer = until_closed(sock)
        finally:
            release.set()
            writer.join(30)
    assert late.startswith(b"HTTP/1.1 503 SERVICE UNAVAILABLE\r\n"), late[:100]
    assert b"Please try again later" in late
    assert rows(store)[ben.id or 0][:2] == ("active", "")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and ana.email.encode() in answer
    assert rows(store)[ana.id or 0][:2] == ("unsubscribed", "one-click")


def test_a_post_queued_past_write_wait_gets_503_and_is_never_written() -> None:
    """The lane is busy with a batch the database holds up; a POST queued behind it for
    longer than web.write_wait is answered 503 without going to the database."""
    entered, release = threading.Event(), threading.Event()
    written: list[list[str]] = []

    class HeldUp:
        busy = ("503 SERVICE UNAVAILABLE", b"later")
        logger = logging.getLogger("test")

        def answer_many(self, tokens: list[str], *, wait: float) -> list[tuple[str, bytes]]:
            written.append(list(tokens))
            entered.set()
            assert release.wait(30)
            return [("200 OK", b"done")] * len(tokens)

    class Connection:
        def __init__(self) -> None:
            self.answered = threading.Event()
            self.data = b""

        def answer(self, data: bytes, *, close: bool) -> None:
            self.data = data
            self.answered.set()

    lane = Lane(HeldUp(), wake=lambda: None, ident="waitress", wait=0.2)  # type: ignore[arg-type]
    first, second = Connection(), Connection()
    lane.submit(first, OneClickRequest("first", "1.1", False))  # type: ignore[arg-type]
    assert entered.wait(10)
    lane.submit(second, OneClickRequest("second", "1.1", False))  # type: ignore[arg-type]
    time.sleep(0.3)  # past the second POST's write_wait, the first batch still held up
    release.set()
    assert first.answered.wait(10) and second.answered.wait(10)
    assert written == [["first"]]
    assert first.data.startswith(b"HTTP/1.1 200 OK\r\nConnection: close\r\n")
    assert second.data.startswith(b"HTTP/1.1 503 SERVICE UNAVAILABLE\r\n")
    assert second.data.endswith(b"\r\n\r\nlater")


# -- reading the bytes -----------------------------------------------------------------

TOKEN = make_token(SECRET, "unsubscribe", 7)
PLAIN = one_click(TOKEN)


def test_a_plain_one_click_is_read_from_its_bytes() -> None:
    assert read_one_click(PLAIN) == OneClickRequest(TOKEN, "1.1", keep_alive=False)
    assert read_one_click(one_click(TOKEN, connection=None)) == OneClickRequest(TOKEN, "1.1", True)
    assert read_one_click(one_click(TOKEN, version="1.0", connection=None)) == OneClickRequest(
        TOKEN, "1.0", False
    )
    bare = f"POST /u/{TOKEN} HTTP/1.1\r\n\r\n".encode()  # no body at all is a one-click too
    assert read_one_click(bare) == OneClickRequest(TOKEN, "1.1", True)


@pytest.mark.parametrize("cut", [1, 8, 40, len(PLAIN) - 30, len(PLAIN) - 1])
def test_part_of_a_one_click_waits_for_the_rest(cut: int) -> None:
    assert read_one_click(PLAIN[:cut]) is INCOMPLETE


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /u/abc HTTP/1.1\r\n\r\n",
        b"POST /p/abc HTTP/1.1\r\n\r\n",
        PLAIN.replace(b"POST /u/", b"POST /u/x/"),
        PLAIN.replace(TOKEN.encode(), TOKEN.encode() + b"?x=1"),
        PLAIN.replace(TOKEN.encode(), b"%41" + TOKEN.encode()),
        PLAIN.replace(b"HTTP/1.1", b"HTTP/2.0"),
        PLAIN.replace(b"POST /u/", b"POST  /u/"),
        chunked(TOKEN),
        PLAIN.replace(b"Host:", b"Expect: 100-continue\r\nHost:"),
        PLAIN.replace(b"Host:", b"Content-Length: 26\r\nHost:"),
        PLAIN.replace(b"Host:", b"Connection: upgrade\r\nHost:"),
        PLAIN.replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\n folded\r\n"),
        PLAIN.replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\n"),
        PLAIN.replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r"),
        PLAIN.replace(b"Host:", b"Bad Name:"),
        PLAIN.replace(b"Content-Length: 26", b"Content-Length: +26"),
        PLAIN.replace(b"Content-Length: 26", b"Content-Length: 99999"),
        PLAIN + b"GET / HTTP/1.1\r\n\r\n",
        PLAIN.replace(ONE_CLICK, b"via=page&topic=t").replace(b": 26", b": 16"),
        PLAIN.replace(b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x"),
        b"POST /u/" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
        b"POST /u/" + b"a" * 9000,
    ],
)
def test_anything_else_is_left_to_waitress(request_bytes: bytes) -> None:
    assert read_one_click(request_bytes) is None
