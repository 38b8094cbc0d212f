"""SMTP transport: `delivery.smtp.connections` connections, opened on first use and kept.

Each recipient gets their own message and their own envelope, so one refused address
fails only that delivery. A batch's content is built and encoded once
(`digest.prepared`); per recipient only the personal headers and links are filled in,
giving byte for byte what `digest.mime` (and so the outbox) writes. With several
connections, each takes the batch's next recipient as soon as it is free.

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
import smtplib
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from digest.config import Config, SmtpSettings
from digest.dkim import DkimKey, load_key
from digest.errors import ConfigError, TransportError
from digest.prepared import Message, PreparedEmail
from digest.transports.base import OutgoingEmail, Recipient, SendResult

log = logging.getLogger(__name__)
PREPARED_KEPT = 64  # distinct contents kept prepared (an edition has one per topic mix)


class _Dropped(Exception):
    """The connection went away before the message body was sent; safe to send it again."""


class _InDoubt(Exception):
    """The connection went away after the body was sent, before the server's answer."""


def _guarded_data(conn: smtplib.SMTP) -> Callable[[bytes], tuple[int, bytes]]:
    """`conn.data` that tells a drop before the body (safe) from one after it (in doubt)."""

    def data(msg: bytes) -> tuple[int, bytes]:
        code, reply = conn.docmd("data")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        # RFC 5321 4.5.2 dot-stuffing (what re.sub(rb"(?m)^\.", b"..") does, 80× faster)
        stuffed = (b"." + msg if msg.startswith(b".") else msg).replace(b"\n.", b"\n..")
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        try:
            conn.send(stuffed + b".\r\n")
            return conn.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _InDoubt(str(exc) or type(exc).__name__) from None

    return data


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
        self._conns: list[smtplib.SMTP | None] = [None] * settings.connections
        self._pool: ThreadPoolExecutor | None = None
        self._prepared: dict[tuple[object, ...], PreparedEmail] = {}
        self._lock = threading.Lock()
        self.connections = 0  # opened so far; reused connections keep this at their number

    def __repr__(self) -> str:  # never show the password, even in a traceback
        s = self.settings
        return f"SmtpTransport({s.host}:{s.port}, security={s.security})"

    # -- connection ------------------------------------------------------------------
    def _where(self) -> str:
        return f"smtp {self.settings.host}:{self.settings.port}"

    def _tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            return self._ssl_context

    def _connection(self, slot: int) -> smtplib.SMTP:
        """Connection `slot`, or a new one there: connected, TLS set up, logged in."""
        found = self._conns[slot]
        if found is not None:
            return found
        conn = self._open()
        with self._lock:
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
            conn.data = _guarded_data(conn)  # type: ignore[method-assign,assignment]
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
        _quietly_close(self._conns[slot])
        self._conns[slot] = None

    def close(self) -> None:
        """Say QUIT and close every open connection."""
        for slot, conn in enumerate(self._conns):
            if conn is None:
                continue
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                conn.close()
            self._conns[slot] = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

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
        queue = iter(range(len(recipients)))
        errors: list[TransportError] = []
        slots = min(len(self._conns), len(recipients))

        def work(slot: int) -> None:
            while True:
                with self._lock:
                    i = next(queue, None)
                if i is None:
                    return
                try:
                    results[i] = self._send_with_reconnect(slot, prepared, recipients[i])
                except TransportError as exc:
                    with self._lock:
                        errors.append(exc)
                    return

        if slots <= 1:
            work(0)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(self._conns), thread_name_prefix="smtp")
            for future in [self._pool.submit(work, slot) for slot in range(slots)]:
                future.result()
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

    def _send_with_reconnect(
        self, slot: int, prepared: PreparedEmail, recipient: Recipient
    ) -> SendResult:
        """Send one message; if the connection drops, reconnect once and send it again."""
        with self._lock:  # building is CPU work: the GIL serialises it anyway
            message = prepared.message(recipient, now=self._now())
        try:
            return self._send_one(slot, prepared.email.from_email, recipient, message)
        except _Dropped as exc:
            log.warning("%s: connection lost (%s); reconnecting", self._where(), exc)
            self._drop(slot)
        try:
            return self._send_one(slot, prepared.email.from_email, recipient, message)
        except _Dropped as exc:
            self._drop(slot)
            raise TransportError(
                f"{self._where()}: connection lost twice: {exc}", retryable=True
            ) from None

    def _send_one(
        self, slot: int, sender: str, recipient: Recipient, message: Message
    ) -> SendResult:
        conn = self._connection(slot)
        try:
            self._send_bytes(conn, sender, recipient.email, message.as_bytes())
        except _InDoubt as exc:
            self._drop(slot)
            return SendResult(
                recipient.delivery_id,
                ok=False,
                error=f"{self._where()}: connection lost after the message was sent: {exc}",
                in_doubt=True,
            )
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(recipient.email, (550, b"recipient refused"))
            return _refused(recipient, code, reply)
        except smtplib.SMTPResponseException as exc:  # MAIL FROM or DATA refused
            if exc.smtp_code == 421 or conn.sock is None:
                self._drop(slot)  # 421: the server is closing this connection
            return _refused(recipient, exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Dropped(str(exc) or type(exc).__name__) from None
        except smtplib.SMTPException as exc:  # e.g. an SMTPUTF8 address the server cannot take
            return SendResult(recipient.delivery_id, ok=False, error=f"smtp: {exc}")
        return SendResult(recipient.delivery_id, ok=True, message_id=message.message_id)

    def _send_bytes(self, conn: smtplib.SMTP, sender: str, to: str, data: bytes) -> None:
        """The exact bytes the outbox would write (signed the same way), as SMTP DATA."""
        options: tuple[str, ...] = ()
        if not (sender + to).isascii():
            if not conn.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError(
                    "the address needs SMTPUTF8, which the server does not offer"
                )
            options = ("SMTPUTF8", "BODY=8BITMIME")
        conn.sendmail(sender, [to], data, options)


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
