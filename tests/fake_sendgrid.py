"""A local stand-in for SendGrid's v3 API that checks every body against a JSON Schema in tests/.

It answers the way the live API does (202 + X-Message-Id, 400/401/413/415 in SendGrid's
error format) and can misbehave on demand: fail, answer slowly, or hang up. A body that
is accepted counts as delivered unless its batch is cancelled, even when the client gave
up waiting for the answer: that is the window a real provider leaves open.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

SCHEMAS = Path(__file__).resolve().parent / "schemas"
API_KEY = "SG.test-key"
SEND = "/v3/mail/send"
BATCH = "/v3/mail/batch"
SCHEDULED = "/v3/user/scheduled_sends"
MAX_BODY = 30 * 1024 * 1024  # the live API's limit on a whole request
SEND_AT_LIMIT = timedelta(hours=72)
MAX_PAUSED_OR_CANCELLED = 10  # "no more than 10 different batches at one time"
# Headers the live API refuses to let a sender set (its documentation lists them).
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id", "x-sg-eid", "received", "dkim-signature", "Content-Type",
        "Content-Transfer-Encoding", "To", "From", "Subject", "Reply-To", "CC", "BCC",
    )
)  # fmt: skip

Validator = Callable[[Any], Any]


# -- the schema --------------------------------------------------------------
def load_schema(name: str) -> dict[str, Any]:
    """A request-body JSON Schema kept in tests/schemas (from SendGrid's Mail Send rules)."""
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@cache
def validators() -> tuple[Validator, Validator]:
    """Compiled once per test session: compiling costs far more than validating."""
    mail, scheduled = load_schema("mail_send.json"), load_schema("scheduled_send.json")
    return fastjsonschema.compile(mail), fastjsonschema.compile(scheduled)


class Refused(Exception):
    """An answer in SendGrid's error format."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def check_schema(validate: Validator, body: Any) -> None:
    """Raise Refused(400) naming the field the way SendGrid does (personalizations.0.to)."""
    try:
        validate(body)
    except fastjsonschema.JsonSchemaValueException as exc:
        field = ".".join(str(p) for p in exc.path[1:]) or None
        message = exc.message.replace("data.", "", 1).replace("data ", "body ", 1)
        raise Refused(400, message, field) from None


def check_live_rules(body: dict[str, Any], now: datetime) -> None:
    """What the live API refuses beyond the schema."""
    content = [c["type"] for c in body.get("content", [])]
    if "text/plain" in content and content.index("text/plain") != 0:
        raise Refused(400, "text/plain must come first in content, then text/html", "content")
    if "subject" not in body and any("subject" not in p for p in body["personalizations"]):
        raise Refused(400, "The subject is required", "subject")
    limit = int((now + SEND_AT_LIMIT).timestamp())
    for where, owner in [
        ("", body),
        *((f"personalizations.{i}.", p) for i, p in enumerate(body["personalizations"])),
    ]:
        if owner.get("send_at", 0) > limit:
            raise Refused(
                400, "send_at cannot be more than 72 hours in the future", where + "send_at"
            )
        for name in owner.get("headers", {}):
            if name.lower() in RESERVED_HEADERS:
                raise Refused(
                    400, f"the header {name} is reserved and cannot be set", where + "headers"
                )


# -- the server ---------------------------------------------------------------
@dataclass
class _Fault:
    kind: str  # "fail", "slow", "drop", or "none"
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0
    accept: bool = False


class FakeSendGrid:
    """SendGrid's Mail Send, batch and scheduled-send endpoints on 127.0.0.1, port 0."""

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        now: Callable[[], datetime] | None = None,
        cancel_margin: float = 600.0,
        keep_bodies: bool = True,
        validate_every: int = 1,
    ) -> None:
        validators()  # compile now, not inside the first (possibly timed) request
        self.api_key = api_key
        self.now = now or (lambda: datetime.now(UTC))  # the clock send_at is checked against
        # A batch is withheld only when cancelled at least this long before its send time.
        self.cancel_margin = timedelta(seconds=cancel_margin)
        self.requests: list[dict[str, Any]] = []
        self.raw: list[tuple[str, bytes]] = []  # (Content-Type, body) of each Mail Send, as sent
        self.arrived: list[datetime] = []  # when each accepted request arrived
        self.batches: set[str] = set()
        self.cancelled: dict[str, datetime] = {}  # batch id -> when it was cancelled
        self.paused: set[str] = set()
        self.cancels_refused = 0
        # A benchmark keeps no bodies (1M recipients held 2 GB) and checks 1 body in N
        # against the schema (validating 1,000 personalizations costs ~50 ms).
        self.keep_bodies = keep_bodies
        self.validate_every = validate_every
        self.accepted = 0  # personalizations accepted, bodies kept or not
        self._seen = 0
        self.concurrent = 0  # Mail Send requests being answered right now
        self.max_concurrent = 0
        self.answers: list[tuple[str, int]] = []  # (path, status; 0 = hung up), in order
        self._faults: dict[str, list[_Fault]] = {}
        self._latency = 0.0
        self._chaos: tuple[random.Random, float, float, float, float, float] | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval keeps shutdown (and so each test's teardown) near-instant.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="fake-sendgrid", daemon=True
        )

    # -- lifecycle
    def start(self) -> FakeSendGrid:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what tests read
    def delivered(self) -> list[str]:
        """The `to` address of every accepted personalization that was not withheld."""
        with self._lock:
            return [
                to["email"]
                for body, arrived in zip(self.requests, self.arrived, strict=True)
                if not self._withheld(body, arrived)
                for p in body["personalizations"]
                for to in p["to"]
            ]

    def _withheld(self, body: dict[str, Any], arrived: datetime) -> bool:
        """A message of a cancelled batch is withheld if it arrived after the cancel, or if
        the cancel came at least `cancel_margin` before its send time."""
        cancelled = self.cancelled.get(body.get("batch_id", ""))
        if cancelled is None:
            return False
        send_at = datetime.fromtimestamp(body.get("send_at", arrived.timestamp()), UTC)
        return arrived >= cancelled or send_at - cancelled >= self.cancel_margin

    def _holds(self, now: datetime) -> set[str]:
        """Cancelled or paused batches that still hold messages to send (SendGrid's limit)."""
        latest: dict[str, float] = {}
        for body in self.requests:
            batch = body.get("batch_id")
            if batch in self.cancelled or batch in self.paused:
                latest[batch] = max(latest.get(batch, 0.0), body.get("send_at", 0))
        return {b for b, at in latest.items() if at > now.timestamp()}

    # -- misbehaviour on demand (Mail Send unless `path` says otherwise)
    def fail_next(
        self,
        status: int,
        n: int = 1,
        *,
        headers: dict[str, str] | None = None,
        message: str = "injected failure",
        path: str = SEND,
    ) -> None:
        self._queue(
            path, n, _Fault("fail", status=status, headers=dict(headers or {}), message=message)
        )

    def slow_next(self, seconds: float, n: int = 1, *, path: str = SEND) -> None:
        """Accept the request, then wait before answering (a client timeout leaves it in doubt)."""
        self._queue(path, n, _Fault("slow", seconds=seconds))

    def drop_next(self, n: int = 1, *, accept: bool = False, path: str = SEND) -> None:
        """Read the request and hang up; with accept=True it still counts as delivered."""
        self._queue(path, n, _Fault("drop", accept=accept))

    def set_chaos(
        self,
        rng: random.Random,
        *,
        rate_limit: float = 0.0,
        server_error: float = 0.0,
        drop_after_accept: float = 0.0,
        slow: float = 0.0,
        slow_seconds: float = 3.0,
    ) -> None:
        """Misbehave at random on Mail Send: each probability applies to every request that
        has no queued fault (429 with a reset 1 s ahead, 500, hang up after accepting, or an
        answer `slow_seconds` late)."""
        self._chaos = (rng, rate_limit, server_error, drop_after_accept, slow, slow_seconds)

    def _chaos_fault(self) -> _Fault | None:
        if self._chaos is None:
            return None
        rng, rate_limit, server_error, drop, slow, slow_seconds = self._chaos
        with self._lock:
            draw = rng.random()
        for chance, fault in (
            (rate_limit, _Fault("fail", 429, rate_limit_headers(self.now().timestamp() + 1))),
            (server_error, _Fault("fail", 500, message="injected server error")),
            (drop, _Fault("drop", accept=True)),
            (slow, _Fault("slow", seconds=slow_seconds)),
        ):
            if draw < chance:
                return fault
            draw -= chance
        return None

    def set_latency(self, seconds: float) -> None:
        """Every answer waits this long after the request was accepted."""
        self._latency = seconds

    def _queue(self, path: str, n: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.setdefault(path, []).extend([fault] * n)

    def _next_fault(self, path: str) -> _Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.pop(0) if queue else None

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._closing.wait(seconds)

    # -- endpoints: each returns (status, headers, body) or raises Refused
    def handle(self, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        if path == SEND:
            return self._send(body)
        if path == BATCH:
            batch_id = secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
            with self._lock:
                self.batches.add(batch_id)
            return 201, {}, {"batch_id": batch_id}
        if path == SCHEDULED:
            return self._schedule(body)
        raise Refused(404, "not found")

    def _enter(self, path: str) -> None:
        if path == SEND:
            with self._lock:
                self.concurrent += 1
                self.max_concurrent = max(self.max_concurrent, self.concurrent)

    def _leave(self, path: str) -> None:
        if path == SEND:
            with self._lock:
                self.concurrent -= 1

    def _send(self, body: Any) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self._seen += 1
            check = self._seen % self.validate_every == 1 or self.validate_every == 1
        if check:
            check_schema(validators()[0], body)
        check_live_rules(body, self.now())
        with self._lock:
            if "batch_id" in body and body["batch_id"] not in self.batches:
                raise Refused(400, "invalid batch id", "batch_id")
            self.accepted += len(body.get("personalizations", ()))
            if self.keep_bodies:
                self.requests.append(body)
                self.arrived.append(self.now())
        return 202, {"X-Message-Id": secrets.token_urlsafe(16)[:22]}, None

    def _schedule(self, body: Any) -> tuple[int, dict[str, str], Any]:
        check_schema(validators()[1], body)
        batch_id, status = body["batch_id"], body["status"]
        with self._lock:
            if batch_id not in self.batches:
                raise Refused(400, "invalid batch id", "batch_id")
            held = self._holds(self.now())
            if batch_id not in held and len(held) >= MAX_PAUSED_OR_CANCELLED:
                self.cancels_refused += 1
                raise Refused(400, "you cannot pause or cancel more than 10 batches at one time")
            if status == "cancel":
                self.cancelled.setdefault(batch_id, self.now())
                self.paused.discard(batch_id)
            else:
                self.paused.add(batch_id)
                self.cancelled.pop(batch_id, None)
        return 201, {}, {"batch_id": batch_id, "status": status}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections under concurrent senders; the client
    # then waits a full SYN retry (1 s), past short test timeouts.
    request_queue_size = 128
    fake: FakeSendGrid

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that timed out and hung up is part of the tests."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        fake = self.server.fake
        path = self.path.split("?", 1)[0]
        fake._enter(path)
        try:
            self._post(fake, path)
        finally:
            fake._leave(path)

    def _post(self, fake: FakeSendGrid, path: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length <= MAX_BODY else b""
        if path == SEND and fake.keep_bodies:
            with fake._lock:
                fake.raw.append((self.headers.get("Content-Type") or "", raw))
        fault = fake._next_fault(path) or (path == SEND and fake._chaos_fault()) or _Fault("none")
        if fault.kind == "drop" and not fault.accept:
            self._hang_up(fake, path)
            return
        headers: dict[str, str] = {}
        try:
            if fault.kind == "fail":
                headers = fault.headers
                raise Refused(fault.status, fault.message)
            status, headers, answer = self._answer(fake, path, raw, length)
        except Refused as exc:
            status, answer = (
                exc.status,
                {"errors": [{"message": exc.message, "field": exc.field, "help": None}]},
            )
        if fault.kind == "drop":
            self._hang_up(fake, path)
            return
        fake._wait(fake._latency + fault.seconds)
        with fake._lock:
            fake.answers.append((path, status))
        self._reply(status, headers, answer)

    def _hang_up(self, fake: FakeSendGrid, path: str) -> None:
        with fake._lock:
            fake.answers.append((path, 0))
        self.close_connection = True  # no status line: the client sees the connection close

    def _answer(
        self, fake: FakeSendGrid, path: str, raw: bytes, length: int
    ) -> tuple[int, dict[str, str], Any]:
        auth = self.headers.get("Authorization")
        if not auth:
            raise Refused(401, "authorization required")
        if auth != f"Bearer {fake.api_key}":
            raise Refused(401, "The provided authorization grant is invalid, expired, or revoked")
        if length > MAX_BODY:
            raise Refused(413, "content too large")
        if (
            raw
            and (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json"
        ):
            raise Refused(415, "Content-Type should be application/json.")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            raise Refused(400, "Bad Request") from None
        return fake.handle(path, body)

    def _reply(self, status: int, headers: dict[str, str], answer: Any) -> None:
        data = b"" if answer is None else json.dumps(answer).encode()
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up waiting


@pytest.fixture(name="fake_sendgrid")
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    """A running fake SendGrid: `.url` is SendGridSettings(host=...), `.api_key` the key."""
    with FakeSendGrid() as fake:
        yield fake


def rate_limit_headers(reset_at: float, limit: int = 600) -> dict[str, str]:
    """The headers SendGrid sends with a 429."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(reset_at)),
    }
