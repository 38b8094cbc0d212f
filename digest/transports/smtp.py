"""SMTP transport: `delivery.smtp.connections` connections, opened on first use and kept.

Each recipient gets their own message and their own envelope, so one refused address
fails only that delivery. A batch's content is built and encoded once
(`digest.prepared`); per recipient only the personal headers and links are filled in,
giving byte for byte what `digest.mime` (and so the outbox) writes. Messages go out
through `digest.transports.smtp_wire` (MAIL, RCPT and DATA in one write where the server
offers PIPELINING). With several connections, each takes the batch's next recipient as
soon as it is free; one thread drives them all, waiting on whichever socket answers next,
so no thread waits for the interpreter lock while an answer is already there.

SMTP has no idempotency key, so what a dropped connection means depends on when it
dropped: before the message body went out (greeting, MAIL, RCPT, the DATA command)
nothing was taken, and the message is sent once more on a new connection; after the body
went out and before the server's answer, the server may have taken it, so that one
message is reported in doubt and never sent again as is. Each connection keeps to these
rules on its own. A refused login stops the run (`fatal`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import selectors
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Generator
from datetime import datetime

from digest.config import Config, SmtpSettings
from digest.dkim import DkimKey, load_key
from digest.errors import ConfigError, TransportError
from digest.prepared import Message, PreparedEmail
from digest.transports.base import OutgoingEmail, Recipient, SendResult
from digest.transports.smtp_wire import DotStuffer, Dropped, InDoubt, Refused, Steps, Wire

log = logging.getLogger(__name__)
PREPARED_KEPT = 64  # distinct contents kept prepared (an edition has one per topic mix)


class SmtpTransport:
    """Delivers through an SMTP server (STARTTLS, implicit TLS, or plain on a trusted link)."""

    name = "smtp"

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        username: str | None,
        password: str | None,
        now: Callable[[], datetime],
        ssl_context: ssl.SSLContext | None = None,
        dkim: DkimKey | None = None,
    ) -> None:
        self.settings = settings
        self._dkim = dkim
        self._username = username
        self._password = password
        self._now = now
        self._ssl_context = ssl_context
        self._conns: list[Wire | None] = [None] * settings.connections
        self._prepared: dict[tuple[object, ...], PreparedEmail] = {}
        self._stuffer = DotStuffer()
        self.connections = 0  # opened so far; reused connections keep this at their number

    def __repr__(self) -> str:  # never show the password, even in a traceback
        s = self.settings
        return f"SmtpTransport({s.host}:{s.port}, security={s.security})"

    # -- connection ------------------------------------------------------------------
    def _where(self) -> str:
        return f"smtp {self.settings.host}:{self.settings.port}"

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _connection(self, slot: int) -> Wire:
        """Connection `slot`, or a new one there: connected, TLS set up, logged in."""
        found = self._conns[slot]
        if found is not None:
            return found
        conn = Wire(self._open(), pipelining=self.settings.pipelining, stuffer=self._stuffer)
        self.connections += 1
        log.info("%s: connected (%s)", self._where(), self.settings.security)
        self._conns[slot] = conn
        return conn

    def _open(self) -> smtplib.SMTP:
        s = self.settings
        conn: smtplib.SMTP | None = None
        try:
            if s.security == "tls":
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self._tls())
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            conn.ehlo()
            if s.security == "starttls":
                conn.starttls(context=self._tls())
                conn.ehlo()  # the server's capabilities may change once encrypted (AUTH)
            if self._username:
                conn.login(self._username, self._password or "")
            return conn
        except smtplib.SMTPAuthenticationError as exc:
            _quietly_close(conn)
            raise TransportError(
                f"{self._where()}: login refused ({exc.smtp_code} {_text(exc.smtp_error)})",
                retryable=False,
                fatal=True,
                hint=f"check {s.username_env} and {s.password_env}",
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            _quietly_close(conn)
            raise TransportError(
                f"{self._where()}: {exc}", retryable=False, hint="check delivery.smtp.security"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            _quietly_close(conn)
            raise TransportError(
                f"{self._where()}: certificate not trusted ({exc.verify_message})",
                retryable=False,
                hint="set delivery.smtp.ca_file to the server's CA certificate",
            ) from None
        except smtplib.SMTPResponseException as exc:
            _quietly_close(conn)
            raise TransportError(
                f"{self._where()}: {exc.smtp_code} {_text(exc.smtp_error)}",
                retryable=400 <= exc.smtp_code < 500,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            _quietly_close(conn)
            raise TransportError(
                f"{self._where()}: cannot connect: {exc}", retryable=True
            ) from None

    def _drop(self, slot: int) -> None:
        found = self._conns[slot]
        _quietly_close(found.conn if found is not None else None)
        self._conns[slot] = None

    def close(self) -> None:
        """Say QUIT and close every open connection."""
        for slot, wire in enumerate(self._conns):
            if wire is None:
                continue
            try:
                wire.conn.quit()
            except (OSError, smtplib.SMTPException):
                wire.conn.close()
            self._conns[slot] = None

    # -- sending -----------------------------------------------------------------------
    def send(self, email: OutgoingEmail) -> list[SendResult]:
        """One message per recipient; one result each, in order (see the module docstring).

        Each connection takes the next recipient until none is left or its server is gone
        (it could not reconnect): then its recipient and any nobody took are failed as
        retryable. If no message was tried at all, the error is raised for the whole batch.
        """
        prepared = self._prepare(email)
        recipients = email.recipients
        results: list[SendResult | None] = [None] * len(recipients)
        queue = iter(range(len(recipients)))  # shared: each connection takes the next
        errors: list[TransportError] = []

        def work(slot: int) -> Steps:
            for i in queue:
                try:
                    results[i] = yield from self._deliver(slot, prepared, recipients[i])
                except TransportError as exc:
                    errors.append(exc)
                    return

        slots = min(len(self._conns), len(recipients))
        _drive([work(slot) for slot in range(slots)], self.settings.timeout)
        if errors and all(r is None for r in results):
            raise errors[0]  # nothing went out: the whole batch fails the same way
        out = []
        for recipient, result in zip(recipients, results, strict=True):
            if result is None:  # its connection's server is gone for now: try again later
                exc = errors[-1]
                result = SendResult(
                    recipient.delivery_id, ok=False, error=exc.message, retryable=exc.retryable
                )
            out.append(result)
        return out

    def _prepare(self, email: OutgoingEmail) -> PreparedEmail:
        """The content's prepared message; batches of one content share it."""
        key = (email.subject, email.html, email.text, email.from_email, email.from_name,
               email.reply_to, tuple(email.headers.items()))  # fmt: skip
        found = self._prepared.get(key)
        if found is None:
            if len(self._prepared) >= PREPARED_KEPT:
                self._prepared.clear()
            found = self._prepared[key] = PreparedEmail(email, dkim=self._dkim)
        return found

    def _deliver(
        self, slot: int, prepared: PreparedEmail, recipient: Recipient
    ) -> Generator[socket.socket, None, SendResult]:
        """Send one message; if the connection drops, reconnect once and send it again."""
        message = prepared.message(recipient, now=self._now())
        try:
            return (yield from self._send_one(slot, prepared.email.from_email, recipient, message))
        except Dropped as exc:
            log.warning("%s: connection lost (%s); reconnecting", self._where(), exc)
            self._drop(slot)
        try:
            return (yield from self._send_one(slot, prepared.email.from_email, recipient, message))
        except Dropped as exc:
            self._drop(slot)
            raise TransportError(
                f"{self._where()}: connection lost twice: {exc}", retryable=True
            ) from None

    def _send_one(
        self, slot: int, sender: str, recipient: Recipient, message: Message
    ) -> Generator[socket.socket, None, SendResult]:
        """The exact bytes the outbox would write (signed the same way), as SMTP DATA."""
        wire = self._connection(slot)
        try:
            yield from wire.send(sender, recipient.email, (message.head, b"\r\n", *message.body))
        except InDoubt as exc:
            self._drop(slot)
            return SendResult(
                recipient.delivery_id,
                ok=False,
                error=f"{self._where()}: connection lost after the message was sent: {exc}",
                in_doubt=True,
            )
        except Refused as exc:  # MAIL, RCPT, DATA or the message refused
            if exc.reply.code == 421:
                self._drop(slot)  # 421: the server is closing this connection
            return _refused(recipient, exc.reply.code, exc.reply.text)
        except smtplib.SMTPException as exc:  # e.g. an SMTPUTF8 address the server cannot take
            return SendResult(recipient.delivery_id, ok=False, error=f"smtp: {exc}")
        return SendResult(recipient.delivery_id, ok=True, message_id=message.message_id)


def _drive(tasks: list[Steps], timeout: float) -> None:
    """Run each task until it waits on a socket; resume it when that socket is readable, or
    throw TimeoutError into it once it has waited `timeout` seconds."""
    waiting: dict[Steps, tuple[float, socket.socket]] = {}  # task -> (deadline, its socket)
    with selectors.DefaultSelector() as selector:

        def advance(task: Steps, error: BaseException | None = None) -> None:
            try:
                sock = task.throw(error) if error is not None else next(task)
            except StopIteration:
                return
            selector.register(sock, selectors.EVENT_READ, task)
            waiting[task] = (time.monotonic() + timeout, sock)

        def resume(task: Steps, error: BaseException | None = None) -> None:
            selector.unregister(waiting.pop(task)[1])  # before the task closes or reopens it
            advance(task, error)

        for task in tasks:
            advance(task)
        while waiting:
            soonest = min(deadline for deadline, _ in waiting.values())
            for key, _ in selector.select(max(0.0, soonest - time.monotonic())):
                resume(key.data)
            now = time.monotonic()
            for task in [t for t, (deadline, _) in waiting.items() if deadline <= now]:
                resume(task, TimeoutError("timed out"))


def _refused(recipient: Recipient, code: int, reply: bytes | str) -> SendResult:
    """4xx is a temporary refusal (try again later); 5xx is final for this address."""
    return SendResult(
        recipient.delivery_id,
        ok=False,
        error=f"smtp {code} {_text(reply)}",
        retryable=400 <= code < 500,
    )


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _quietly_close(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        with contextlib.suppress(OSError):
            conn.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_smtp(config: Config, *, now: Callable[[], datetime]) -> SmtpTransport:
    """The SMTP transport for `config`; the login (if any) comes from the environment."""
    s = config.delivery.smtp
    username = os.environ.get(s.username_env) or None
    password = os.environ.get(s.password_env) or None
    if username and password is None:
        raise ConfigError(
            s.password_env, "not set, but a login is", hint=f"export {s.password_env}=..."
        )
    if username and s.security == "none" and not _is_loopback(s.host):
        raise ConfigError(
            str(config.path),
            "a login over an unencrypted connection would send the password in clear",
            key="delivery.smtp.security",
            hint="use starttls or tls",
        )
    context = None
    if s.ca_file:
        ca = config.resolve(s.ca_file)
        try:
            context = ssl.create_default_context(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                str(config.path), f"cannot read {ca}: {exc}", key="delivery.smtp.ca_file"
            ) from None
    return SmtpTransport(
        s,
        username=username,
        password=password,
        now=now,
        ssl_context=context,
        dkim=load_key(config),
    )
