"""The SMTP transport against a real SMTP server on loopback."""

from __future__ import annotations

import socket
from collections import Counter
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from fake_smtp import FakeSmtp
from fake_smtp import smtp_server as smtp_server_fixture  # noqa: F401
from fake_smtp import smtp_ssl_server as smtp_ssl_server_fixture  # noqa: F401

from digest.config import Config, SmtpSettings
from digest.errors import ConfigError, TransportError
from digest.transports import make_transport
from digest.transports.base import OutgoingEmail, Recipient
from digest.transports.smtp import SmtpTransport, make_smtp

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
UNSUB = "-unsubscribe_url-"
LIST_ID = "The Week in Review <weekly.digest.example.com>"


def _clock() -> datetime:
    return NOW


def _email(count: int, *, first_id: int = 1) -> OutgoingEmail:
    recipients = []
    for i in range(first_id, first_id + count):
        link = f"https://digest.example.com/u/token-{i}"
        recipients.append(
            Recipient(
                delivery_id=i,
                email=f"reader{i}@example.com",
                name=f"Reader {i}",
                substitutions={UNSUB: link},
                headers={
                    "List-Unsubscribe": f"<{link}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
            )
        )
    return OutgoingEmail(
        subject="Prism Weekly: The Week in Review",
        html=f'<p>Hello</p><a href="{UNSUB}">Unsubscribe</a>',
        text=f"Hello\nUnsubscribe: {UNSUB}\n",
        from_email="weekly@digest.example.com",
        from_name="Prism Weekly",
        reply_to="editors@digest.example.com",
        recipients=tuple(recipients),
        headers={"List-Id": LIST_ID},
    )


def _transport(server: FakeSmtp, **kwargs: Any) -> SmtpTransport:
    """One connection unless the test asks for more, so messages arrive in order."""
    settings = server.settings(**{"connections": 1, **kwargs.pop("settings", {})})
    options: dict[str, Any] = {"username": None, "password": None, **kwargs}
    return SmtpTransport(settings, now=_clock, **options)


def test_each_recipient_gets_one_message_with_both_parts_and_every_header(
    smtp_server: FakeSmtp,
) -> None:
    transport = _transport(smtp_server)
    results = transport.send(_email(3))
    transport.close()

    assert [r.ok for r in results] == [True, True, True]
    received = smtp_server.messages
    assert len(received) == 3
    for i, (got, result) in enumerate(zip(received, results, strict=True), start=1):
        msg = got.message
        assert got.mail_from == "weekly@digest.example.com"
        assert got.rcpt_tos == (f"reader{i}@example.com",)
        assert msg["To"] == f"Reader {i} <reader{i}@example.com>"
        assert msg["From"] == "Prism Weekly <weekly@digest.example.com>"
        assert msg["Reply-To"] == "editors@digest.example.com"
        assert msg["List-Unsubscribe"] == f"<https://digest.example.com/u/token-{i}>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Id"] == LIST_ID
        assert msg["Message-ID"] == result.message_id
        assert parsedate_to_datetime(msg["Date"]) == NOW
        assert msg["X-Digest-Delivery"] == str(i)
        assert msg.get_content_type() == "multipart/alternative"
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert text is not None and html is not None
        assert f"token-{i}" in text.get_content()
        assert f'href="https://digest.example.com/u/token-{i}"' in html.get_content()
    assert len({r.message_id for r in results}) == 3


def test_one_connection_is_opened_lazily_and_reused_across_sends(smtp_server: FakeSmtp) -> None:
    transport = _transport(smtp_server)
    assert smtp_server.connections == 0
    first = transport.send(_email(10))
    second = transport.send(_email(10, first_id=11))
    transport.close()

    assert all(r.ok for r in first + second)
    assert len(smtp_server.messages) == 20
    assert smtp_server.connections == 1
    assert transport.connections == 1


def test_close_quits_and_the_next_send_opens_a_new_connection(smtp_server: FakeSmtp) -> None:
    transport = _transport(smtp_server)
    transport.close()  # nothing open yet: nothing to do
    transport.send(_email(1))
    transport.close()
    transport.send(_email(1, first_id=2))
    transport.close()
    assert smtp_server.connections == 2
    assert [m.rcpt_tos for m in smtp_server.messages] == [
        ("reader1@example.com",),
        ("reader2@example.com",),
    ]


def test_a_dropped_connection_is_reopened_and_every_message_arrives_once(
    smtp_server: FakeSmtp,
) -> None:
    smtp_server.drop_after(2)
    transport = _transport(smtp_server)
    results = transport.send(_email(5))
    transport.close()

    assert all(r.ok for r in results)
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        f"reader{i}@example.com" for i in range(1, 6)
    ]
    assert smtp_server.connections == 2


def test_a_message_taken_before_the_connection_dropped_is_in_doubt_and_never_resent(
    smtp_server: FakeSmtp,
) -> None:
    smtp_server.take_then_hang_up(1)  # the server took message 1, its answer never came
    transport = _transport(smtp_server)
    results = transport.send(_email(3))
    transport.close()

    assert [r.ok for r in results] == [False, True, True]
    assert results[0].in_doubt and not results[0].retryable
    assert results[0].error is not None and "after the message was sent" in results[0].error
    # each address reached the server exactly once: nothing was sent again blindly
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        f"reader{i}@example.com" for i in range(1, 4)
    ]


def test_when_reconnecting_fails_the_rest_of_the_batch_is_retryable(
    smtp_server: FakeSmtp,
) -> None:
    smtp_server.drop_after(2, then_refuse_connections=True)
    transport = _transport(smtp_server)
    results = transport.send(_email(5))
    transport.close()

    assert [r.ok for r in results] == [True, True, False, False, False]
    assert [r.delivery_id for r in results] == [1, 2, 3, 4, 5]
    for failed in results[2:]:
        assert failed.retryable
        assert failed.error is not None and "cannot connect" in failed.error
    assert len(smtp_server.messages) == 2


def test_a_4xx_refusal_is_retryable_and_a_5xx_refusal_is_permanent(smtp_server: FakeSmtp) -> None:
    smtp_server.refuse_next(450, "4.2.1 Mailbox busy, try later")
    smtp_server.refuse_next(550, "5.1.1 No such mailbox")
    transport = _transport(smtp_server)
    results = transport.send(_email(3))
    transport.close()

    busy, missing, fine = results
    assert (busy.ok, busy.retryable) == (False, True)
    assert busy.error == "smtp 450 4.2.1 Mailbox busy, try later"
    assert (missing.ok, missing.retryable) == (False, False)
    assert missing.error == "smtp 550 5.1.1 No such mailbox"
    assert fine.ok and fine.message_id
    assert [m.rcpt_tos for m in smtp_server.messages] == [("reader3@example.com",)]
    assert smtp_server.connections == 1  # a refusal does not cost the connection


def test_starttls_with_login_encrypts_before_authenticating(smtp_server: FakeSmtp) -> None:
    smtp_server.use_starttls()
    smtp_server.require_auth("digest", "s3cret-pass")
    transport = _transport(
        smtp_server,
        settings={"security": "starttls"},
        username="digest",
        password="s3cret-pass",
        ssl_context=smtp_server.client_context(),
    )
    results = transport.send(_email(2))
    transport.close()

    assert all(r.ok for r in results)
    assert [(m.tls, m.login) for m in smtp_server.messages] == [(True, "digest"), (True, "digest")]


def test_a_refused_login_is_permanent_and_never_shows_the_password(smtp_server: FakeSmtp) -> None:
    smtp_server.use_starttls()
    smtp_server.require_auth("digest", "right-pass")
    transport = _transport(
        smtp_server,
        settings={"security": "starttls"},
        username="digest",
        password="wrong-pass-123",
        ssl_context=smtp_server.client_context(),
    )
    with pytest.raises(TransportError) as caught:
        transport.send(_email(1))
    assert "login refused (535" in caught.value.message
    assert caught.value.retryable is False and caught.value.fatal is True
    assert caught.value.hint == "check SMTP_USERNAME and SMTP_PASSWORD"
    assert "wrong-pass-123" not in f"{caught.value} {caught.value.hint} {transport!r}"
    assert smtp_server.messages == []


def test_an_untrusted_certificate_stops_the_send(smtp_server: FakeSmtp) -> None:
    smtp_server.use_starttls()
    transport = _transport(smtp_server, settings={"security": "starttls"})
    with pytest.raises(TransportError) as caught:
        transport.send(_email(1))
    assert "certificate not trusted" in caught.value.message
    assert caught.value.retryable is False
    assert caught.value.hint is not None and "ca_file" in caught.value.hint


def test_implicit_tls_delivers(smtp_ssl_server: FakeSmtp) -> None:
    transport = _transport(smtp_ssl_server, ssl_context=smtp_ssl_server.client_context())
    results = transport.send(_email(2))
    transport.close()
    assert all(r.ok for r in results)
    assert [m.tls for m in smtp_ssl_server.messages] == [True, True]


def test_a_server_that_is_not_there_is_a_retryable_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = SmtpSettings.model_validate(
        {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 2.0}
    )
    transport = SmtpTransport(settings, username=None, password=None, now=_clock)
    with pytest.raises(TransportError) as caught:
        transport.send(_email(1))
    assert caught.value.retryable is True
    assert f"smtp 127.0.0.1:{port}: cannot connect" in caught.value.message


def _with_smtp(config: Config, **smtp: Any) -> Config:
    delivery = config.delivery.model_copy(
        update={"smtp": config.delivery.smtp.model_copy(update=smtp), "transport": "smtp"}
    )
    return config.model_copy(update={"delivery": delivery})


def test_make_smtp_logs_in_with_the_environment_and_trusts_ca_file(
    smtp_server: FakeSmtp, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_server.use_starttls()
    smtp_server.require_auth("mailer", "env-pass-456")
    monkeypatch.setenv("SMTP_USERNAME", "mailer")
    monkeypatch.setenv("SMTP_PASSWORD", "env-pass-456")
    cfg = _with_smtp(
        config,
        host="127.0.0.1",
        port=smtp_server.port,
        security="starttls",
        ca_file=str(smtp_server.ca_file),
        timeout=5.0,
    )
    transport = make_transport("smtp", cfg, edition_key="weekly/2026-W48", now=_clock)
    assert transport.name == "smtp"
    results = transport.send(_email(1))
    transport.close()
    assert results[0].ok
    assert smtp_server.messages[0].login == "mailer"


def test_make_smtp_without_a_login_sends_without_auth(
    smtp_server: FakeSmtp, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMTP_USERNAME", raising=False)
    cfg = _with_smtp(config, port=smtp_server.port, security="none")
    transport = make_smtp(cfg, now=_clock)
    assert transport.send(_email(1))[0].ok
    transport.close()
    assert smtp_server.messages[0].login is None


def test_make_smtp_refuses_a_login_without_password_or_over_plain_text(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_USERNAME", "mailer")
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="SMTP_PASSWORD: not set, but a login is"):
        make_smtp(config, now=_clock)
    monkeypatch.setenv("SMTP_PASSWORD", "pw-789")
    remote = _with_smtp(config, host="mail.example.com", security="none")
    with pytest.raises(ConfigError, match="delivery.smtp.security: a login over an unencrypted"):
        make_smtp(remote, now=_clock)


def test_make_smtp_names_a_missing_ca_file(config: Config) -> None:
    cfg = _with_smtp(config, ca_file="certs/missing.pem")
    with pytest.raises(ConfigError, match=r"delivery.smtp.ca_file: cannot read .*missing.pem"):
        make_smtp(cfg, now=_clock)


# -- several connections: each keeps the exactly-once rules on its own -----------------
def _arrivals(server: FakeSmtp) -> Counter[str]:
    return Counter(m.rcpt_tos[0] for m in server.messages)


def test_several_connections_share_a_batch_and_are_kept_for_the_next(
    smtp_server: FakeSmtp,
) -> None:
    transport = _transport(smtp_server, settings={"connections": 3})
    first = transport.send(_email(12))
    second = transport.send(_email(12, first_id=13))
    transport.close()

    assert all(r.ok for r in first + second)
    assert [r.delivery_id for r in first + second] == list(range(1, 25))  # results in order
    assert _arrivals(smtp_server) == Counter(f"reader{i}@example.com" for i in range(1, 25))
    assert smtp_server.connections == transport.connections == 3
    assert len({r.message_id for r in first + second}) == 24


def test_a_drop_on_one_of_several_connections_resends_only_what_was_not_sent(
    smtp_server: FakeSmtp,
) -> None:
    smtp_server.drop_after(4)  # whichever connection carries the 4th message is closed
    transport = _transport(smtp_server, settings={"connections": 3})
    results = transport.send(_email(12))
    transport.close()

    assert all(r.ok for r in results)
    assert _arrivals(smtp_server) == Counter(f"reader{i}@example.com" for i in range(1, 13))
    assert smtp_server.connections == 4  # the three, and the one reopened after the drop


def test_a_message_taken_before_a_drop_on_one_of_several_connections_is_in_doubt(
    smtp_server: FakeSmtp,
) -> None:
    smtp_server.take_then_hang_up(1)
    transport = _transport(smtp_server, settings={"connections": 3})
    results = transport.send(_email(12))
    transport.close()

    doubtful = [r for r in results if r.in_doubt]
    assert len(doubtful) == 1 and not doubtful[0].ok and not doubtful[0].retryable
    assert sum(r.ok for r in results) == 11
    # every address reached the server once, the doubtful one included: none sent again
    assert _arrivals(smtp_server) == Counter(f"reader{i}@example.com" for i in range(1, 13))


def test_when_one_connection_cannot_reconnect_the_others_finish_the_batch(
    smtp_server: FakeSmtp,
) -> None:
    smtp_server.drop_after(2, then_refuse_connections=True)
    transport = _transport(smtp_server, settings={"connections": 3})
    results = transport.send(_email(12))
    transport.close()

    sent = {f"reader{r.delivery_id}@example.com" for r in results if r.ok}
    failed = [r for r in results if not r.ok]
    assert failed and all(r.retryable and not r.in_doubt for r in failed)
    assert all("cannot connect" in (r.error or "") for r in failed)
    assert _arrivals(smtp_server) == Counter(sent)  # what failed never arrived; nothing twice
    assert len(sent) + len(failed) == 12


def test_with_several_connections_a_server_that_is_not_there_fails_the_whole_batch() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = SmtpSettings.model_validate(
        {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 2.0, "connections": 3}
    )
    transport = SmtpTransport(settings, username=None, password=None, now=_clock)
    with pytest.raises(TransportError) as caught:
        transport.send(_email(6))
    transport.close()
    assert caught.value.retryable is True and "cannot connect" in caught.value.message
