"""SMTP transport: one connection, opened on first use and kept for every message after.

Each recipient gets their own message (built by `digest.mime`, so it is byte-for-byte
what the outbox would write) and their own envelope, so one refused address fails only
that delivery. SMTP has no idempotency key, so what a dropped connection means depends
on when it dropped: before the message body went out (greeting, MAIL, RCPT, the DATA
command) nothing was taken, and the message is sent once more on a new connection; after
the body went out and before the server's answer, the server may have taken it, so that
one message is reported in doubt and never sent again as is. A refused login stops the
run (`fatal`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import smtplib
import ssl
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage

from digest.config import Config, SmtpSettings
from digest.dkim import DkimKey, load_key
from digest.errors import ConfigError, TransportError
from digest.mime import build_message, message_bytes
from digest.transports.base import OutgoingEmail, Recipient, SendResult

log = logging.getLogger(__name__)


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
        stuffed = re.sub(rb"(?m)^\.", b"..", msg)  # RFC 5321 4.5.2 dot-stuffing
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
        self._conn: smtplib.SMTP | None = None
        self.connections = 0  # opened so far; a reused connection keeps this at 1

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

    def _connection(self) -> smtplib.SMTP:
        """The open connection, or a new one: connected, TLS set up, logged in."""
        if self._conn is not None:
            return self._conn
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
        self.connections += 1
        log.info("%s: connected (%s)", self._where(), s.security)
        self._conn = conn
        return conn

    def _drop(self) -> None:
        _quietly_close(self._conn)
        self._conn = None

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        if self._conn is None:
            return
        try:
            self._conn.quit()
        except (OSError, smtplib.SMTPException):
            self._conn.close()
        self._conn = None

    # -- sending -----------------------------------------------------------------------
    def send(self, email: OutgoingEmail) -> list[SendResult]:
        """One message per recipient, in order; one result each (see the module docstring)."""
        results: list[SendResult] = []
        for i, recipient in enumerate(email.recipients):
            message = build_message(email, recipient, now=self._now())
            try:
                results.append(self._send_with_reconnect(email.from_email, recipient, message))
            except TransportError as exc:
                if not results:
                    raise  # nothing went out: the whole batch fails the same way
                # The server is gone for now: nothing more is tried in this batch, and
                # every message left can be sent again later.
                results.extend(
                    SendResult(r.delivery_id, ok=False, error=exc.message, retryable=exc.retryable)
                    for r in email.recipients[i:]
                )
                break
        return results

    def _send_with_reconnect(
        self, sender: str, recipient: Recipient, message: EmailMessage
    ) -> SendResult:
        """Send one message; if the connection drops, reconnect once and send it again."""
        try:
            return self._send_one(sender, recipient, message)
        except _Dropped as exc:
            log.warning("%s: connection lost (%s); reconnecting", self._where(), exc)
            self._drop()
        try:
            return self._send_one(sender, recipient, message)
        except _Dropped as exc:
            self._drop()
            raise TransportError(
                f"{self._where()}: connection lost twice: {exc}", retryable=True
            ) from None

    def _send_one(self, sender: str, recipient: Recipient, message: EmailMessage) -> SendResult:
        conn = self._connection()
        try:
            self._send_bytes(conn, sender, recipient.email, message)
        except _InDoubt as exc:
            self._drop()
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
                self._drop()  # 421: the server is closing this connection
            return _refused(recipient, exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Dropped(str(exc) or type(exc).__name__) from None
        except smtplib.SMTPException as exc:  # e.g. an SMTPUTF8 address the server cannot take
            return SendResult(recipient.delivery_id, ok=False, error=f"smtp: {exc}")
        return SendResult(recipient.delivery_id, ok=True, message_id=message["Message-ID"])

    def _send_bytes(self, conn: smtplib.SMTP, sender: str, to: str, message: EmailMessage) -> None:
        """The exact bytes the outbox would write (signed the same way), as SMTP DATA."""
        options: tuple[str, ...] = ()
        utf8 = not (sender + to).isascii()
        if utf8:
            if not conn.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError(
                    "the address needs SMTPUTF8, which the server does not offer"
                )
            options = ("SMTPUTF8", "BODY=8BITMIME")
        conn.sendmail(sender, [to], message_bytes(message, self._dkim, utf8=utf8), options)


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
