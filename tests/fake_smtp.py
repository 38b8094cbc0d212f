"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests: records what it receives and can
be told to misbehave (refuse a recipient, drop the connection, hang up on a command,
demand AUTH or STARTTLS). It offers PIPELINING, as real servers do (aiosmtpd takes
pipelined commands but does not say so by itself); `offer_pipelining(False)` stops that.

Use it from a test module with
`from fake_smtp import smtp_server as smtp_server_fixture  # noqa: F401` (the alias keeps
ruff from reading the test argument as a redefinition); `smtp_ssl_server` is implicit TLS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from digest.config import SmtpSettings

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    """One message as the server took it: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    tls: bool
    login: str | None


@dataclass
class _State:
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    refusals: list[str] = field(default_factory=list)  # replies for the next RCPTs
    drop_after: int | None = None  # close the connection after this many more messages
    then_refuse: bool = False  # and stop listening, so a reconnect fails
    silent_drops: int = 0  # take the next messages, then hang up before answering
    hang_up_on: str | None = None  # close the connection on this command, before answering
    stall_on: str | None = None  # answer this command (MAIL, or BODY: the message) late
    stall_seconds: float = 0.0
    pipelining: bool = True  # offer PIPELINING in the EHLO answer
    auth: tuple[str, str] | None = None
    tls_context: ssl.SSLContext | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler:
    def __init__(self, state: _State) -> None:
        self.state = state
        self.stop_listening: Any = None  # set once the controller runs

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        with self.state.lock:
            offer = self.state.pipelining
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if offer else responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.state.lock:
            refusal = self.state.refusals.pop(0) if self.state.refusals else None
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = cast(bytes, envelope.original_content or envelope.content)
        message = cast(EmailMessage, message_from_bytes(raw, policy=policy.default))
        transport = server.transport
        user = getattr(session.auth_data, "login", None)
        login = user.decode() if isinstance(user, bytes) else None
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            message=message,
            raw=raw,
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
            login=login,
        )
        with self.state.lock:
            self.state.messages.append(received)
            stall = self.state.stall_seconds if self.state.stall_on == "BODY" else 0.0
            if stall:
                self.state.stall_on = None
        if stall:
            await asyncio.sleep(stall)  # the message is taken; its answer comes too late
        with self.state.lock:
            if self.state.silent_drops > 0:
                self.state.silent_drops -= 1
                if server.transport is not None:
                    server.transport.abort()  # the message is taken; its answer never comes
                return "250 Message accepted"
            drop = False
            if self.state.drop_after is not None:
                self.state.drop_after -= 1
                drop = self.state.drop_after <= 0
            if drop:
                self.state.drop_after = None
                if self.state.then_refuse and self.stop_listening is not None:
                    self.stop_listening()
        if drop and server.transport is not None:
            # Answer first, then hang up: the client learns of the drop on its next command.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 Message accepted"


class _CountingSMTP(SMTP):
    def __init__(self, state: _State, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = state

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # not the STARTTLS re-entry
            with self._state.lock:
                self._state.connections += 1
        super().connection_made(transport)

    def _hang_up_on(self, command: str) -> bool:
        with self._state.lock:
            if self._state.hang_up_on != command:
                return False
            self._state.hang_up_on = None
        if self.transport is not None:
            self.transport.abort()
        return True

    async def smtp_MAIL(self, arg: str) -> None:
        with self._state.lock:
            stall = self._state.stall_seconds if self._state.stall_on == "MAIL" else 0.0
            if stall:
                self._state.stall_on = None
        if stall:
            await asyncio.sleep(stall)
        if not self._hang_up_on("MAIL"):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        if not self._hang_up_on("RCPT"):
            await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if not self._hang_up_on("DATA"):
            await super().smtp_DATA(arg)


class _Controller(Controller):
    def __init__(self, state: _State, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, hostname=HOST, port=0, **kwargs)
        self.state = state

    def factory(self) -> SMTP:
        # Built per connection, so require_auth / use_starttls apply to the next connection.
        state = self.state
        kwargs: dict[str, Any] = dict(self.SMTP_kwargs)
        if state.tls_context is not None:
            kwargs.update(tls_context=state.tls_context, require_starttls=True)
        if state.auth is not None:
            kwargs.update(
                authenticator=_authenticator(state),
                auth_required=True,
                auth_require_tls=state.tls_context is not None or self.ssl_context is not None,
            )
        return _CountingSMTP(state, self.handler, **kwargs)

    def _trigger_server(self) -> None:
        # Listening on port 0: learn the real port before the base class connects to it.
        assert self.server is not None
        self.port = cast(asyncio.Server, self.server).sockets[0].getsockname()[1]
        super()._trigger_server()


def _authenticator(state: _State) -> Any:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if (
            isinstance(data, LoginPassword)
            and state.auth is not None
            and (data.login.decode(), data.password.decode()) == state.auth
        ):
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    return check


class FakeSmtp:
    """Handle on a running fake server; every knob applies from the next message or connection."""

    def __init__(self, cert_dir: Path, *, implicit_tls: bool = False) -> None:
        self._state = _State()
        self._cert_dir = cert_dir
        self._handler = _Handler(self._state)
        server_ctx = self._server_context() if implicit_tls else None
        self._controller = _Controller(self._state, self._handler, ssl_context=server_ctx)
        self.implicit_tls = implicit_tls

    def start(self) -> None:
        self._controller.start()
        loop = self._controller.loop
        server = self._controller.server
        assert server is not None
        self._handler.stop_listening = lambda: loop.call_soon(server.close)
        with self._state.lock:
            self._state.connections = 0  # the controller's own start-up probe

    def stop(self) -> None:
        self._controller.stop()

    # -- what was received ------------------------------------------------------------
    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def messages(self) -> list[Received]:
        with self._state.lock:
            return list(self._state.messages)

    @property
    def connections(self) -> int:
        with self._state.lock:
            return self._state.connections

    # -- misbehaviour -----------------------------------------------------------------
    def refuse_next(self, code: int = 550, text: str = "5.1.1 No such mailbox") -> None:
        """The next RCPT TO gets `code text` instead of 250."""
        with self._state.lock:
            self._state.refusals.append(f"{code} {text}")

    def drop_after(self, messages: int, *, then_refuse_connections: bool = False) -> None:
        """Close the connection right after accepting `messages` more messages."""
        with self._state.lock:
            self._state.drop_after = messages
            self._state.then_refuse = then_refuse_connections

    def take_then_hang_up(self, messages: int = 1) -> None:
        """Take the next `messages` messages, hanging up each time before the 250 answer."""
        with self._state.lock:
            self._state.silent_drops = messages

    def hang_up_on(self, command: str) -> None:
        """Close the connection when the next `command` (MAIL, RCPT, DATA) comes, unanswered."""
        with self._state.lock:
            self._state.hang_up_on = command

    def stall_on(self, what: str, seconds: float) -> None:
        """Answer the next MAIL command, or the next message (BODY), `seconds` late."""
        with self._state.lock:
            self._state.stall_on, self._state.stall_seconds = what, seconds

    def offer_pipelining(self, offer: bool) -> None:
        """Whether the EHLO answer (of connections opened from now on) offers PIPELINING."""
        with self._state.lock:
            self._state.pipelining = offer

    def require_auth(self, username: str, password: str) -> None:
        with self._state.lock:
            self._state.auth = (username, password)

    def use_starttls(self) -> None:
        """Offer (and insist on) STARTTLS with a self-signed certificate for 127.0.0.1."""
        with self._state.lock:
            self._state.tls_context = self._server_context()

    # -- what a client needs ----------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        self._certificate()
        return self._cert_dir / "cert.pem"

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def settings(self, **overrides: Any) -> SmtpSettings:
        security = "tls" if self.implicit_tls else "none"
        values: dict[str, Any] = {"host": HOST, "port": self.port, "security": security}
        return SmtpSettings.model_validate({**values, "timeout": 5.0, **overrides})

    def _server_context(self) -> ssl.SSLContext:
        cert, key = self._certificate()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        return ctx

    def _certificate(self) -> tuple[Path, Path]:
        cert, key = self._cert_dir / "cert.pem", self._cert_dir / "key.pem"
        if not cert.exists():
            _write_self_signed(cert, key)
        return cert, key


def _write_self_signed(cert_path: Path, key_path: Path) -> None:
    """A self-signed certificate for 127.0.0.1/localhost, valid for a day around now."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "digest test SMTP")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _running(tmp_path_factory: pytest.TempPathFactory, *, implicit_tls: bool) -> Iterator[FakeSmtp]:
    server = FakeSmtp(tmp_path_factory.mktemp("smtp-cert"), implicit_tls=implicit_tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="smtp_server")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSmtp]:
    """A plain SMTP server on 127.0.0.1 (port 0); call use_starttls()/require_auth() to harden."""
    yield from _running(tmp_path_factory, implicit_tls=False)


@pytest.fixture(name="smtp_ssl_server")
def smtp_ssl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSmtp]:
    """An implicit-TLS (SMTPS) server on 127.0.0.1 with a self-signed certificate."""
    yield from _running(tmp_path_factory, implicit_tls=True)
