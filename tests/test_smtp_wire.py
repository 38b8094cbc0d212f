"""What the SMTP transport puts on the wire: pipelined commands where the server offers
PIPELINING, one command at a time where it does not, dot-stuffed CRLF bodies, and the
same failure rules whichever way the commands went out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from fake_smtp import FakeSmtp
from fake_smtp import smtp_server as smtp_server_fixture  # noqa: F401
from test_smtp import _email
from wire_tap import WireTap

from digest.transports.smtp import SmtpTransport

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest.fixture
def tap(smtp_server: FakeSmtp) -> Iterator[WireTap]:
    relay = WireTap((smtp_server.host, smtp_server.port))
    yield relay
    relay.close()


def _transport(server: FakeSmtp, tap: WireTap | None = None, **settings: Any) -> SmtpTransport:
    values: dict[str, Any] = {"connections": 1, **settings}
    if tap is not None:
        values["port"] = tap.port
    return SmtpTransport(server.settings(**values), username=None, password=None, now=lambda: NOW)


def _commands_between_answers(tap: WireTap) -> list[list[bytes]]:
    """The commands of each client turn: what it sent before the server answered again."""
    turns: list[list[bytes]] = []
    last = ""
    for side, data in tap.events():
        if side == "client":
            words = re.findall(rb"^(MAIL|RCPT|DATA)\b", data, flags=re.MULTILINE)
            if last != "client":
                turns.append([])
            turns[-1] += words
        last = side
    return [t for t in turns if t]


def test_mail_rcpt_and_data_go_out_together_when_the_server_offers_pipelining(
    smtp_server: FakeSmtp, tap: WireTap
) -> None:
    transport = _transport(smtp_server, tap)
    results = transport.send(_email(3))
    transport.close()

    assert all(r.ok for r in results)
    assert _commands_between_answers(tap) == [[b"MAIL", b"RCPT", b"DATA"]] * 3
    assert [m.rcpt_tos for m in smtp_server.messages] == [
        (f"reader{i}@example.com",) for i in (1, 2, 3)
    ]


@pytest.mark.parametrize("why", ["the server does not offer it", "the setting is off"])
def test_each_command_waits_for_its_answer_without_pipelining(
    smtp_server: FakeSmtp, tap: WireTap, why: str
) -> None:
    if why == "the server does not offer it":
        smtp_server.offer_pipelining(False)
        transport = _transport(smtp_server, tap)
    else:
        transport = _transport(smtp_server, tap, pipelining=False)
    results = transport.send(_email(2))
    transport.close()

    assert all(r.ok for r in results)
    assert _commands_between_answers(tap) == [[b"MAIL"], [b"RCPT"], [b"DATA"]] * 2
    assert len(smtp_server.messages) == 2


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_a_hang_up_before_the_body_sends_the_message_again_once(
    smtp_server: FakeSmtp, command: str, pipelining: bool
) -> None:
    smtp_server.offer_pipelining(pipelining)
    transport = _transport(smtp_server)
    transport.send(_email(1))  # the connection is open and has sent one message
    smtp_server.hang_up_on(command)
    results = transport.send(_email(3, first_id=2))
    transport.close()

    assert all(r.ok and not r.in_doubt for r in results)
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        f"reader{i}@example.com" for i in (1, 2, 3, 4)
    ]
    assert smtp_server.connections == 2


@pytest.mark.parametrize("pipelining", [True, False])
def test_refused_recipients_leave_the_connection_ready_for_the_next_message(
    smtp_server: FakeSmtp, pipelining: bool
) -> None:
    smtp_server.offer_pipelining(pipelining)
    smtp_server.refuse_next(550, "5.1.1 No such mailbox")
    smtp_server.refuse_next(451, "4.3.0 Try again later")
    transport = _transport(smtp_server)
    results = transport.send(_email(3))
    transport.close()

    assert [(r.ok, r.retryable) for r in results] == [(False, False), (False, True), (True, False)]
    assert results[0].error == "smtp 550 5.1.1 No such mailbox"
    assert [m.rcpt_tos for m in smtp_server.messages] == [("reader3@example.com",)]
    assert smtp_server.connections == 1


def test_an_answer_that_never_comes_before_the_body_is_sent_again_after_the_timeout(
    smtp_server: FakeSmtp,
) -> None:
    transport = _transport(smtp_server, timeout=1.5)
    transport.send(_email(1))
    smtp_server.stall_on("MAIL", 6.0)
    results = transport.send(_email(2, first_id=2))
    transport.close()

    assert all(r.ok for r in results)
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        f"reader{i}@example.com" for i in (1, 2, 3)
    ]


def test_an_answer_that_never_comes_after_the_body_is_in_doubt_and_not_resent(
    smtp_server: FakeSmtp,
) -> None:
    transport = _transport(smtp_server, timeout=1.5, connections=2)
    smtp_server.stall_on("BODY", 6.0)
    results = transport.send(_email(4))
    transport.close()

    doubtful = [r for r in results if r.in_doubt]
    assert len(doubtful) == 1 and not doubtful[0].ok and not doubtful[0].retryable
    assert "after the message was sent" in (doubtful[0].error or "")
    assert sum(r.ok for r in results) == 3
    # each address reached the server once, the doubtful one included
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        f"reader{i}@example.com" for i in (1, 2, 3, 4)
    ]


def test_the_body_on_the_wire_is_dot_stuffed_crlf_and_within_the_line_limit(
    smtp_server: FakeSmtp, tap: WireTap
) -> None:
    long_word = "x" * 2500
    text = f".hidden line\n.\n..two dots\n{long_word}\nUnsubscribe: -unsubscribe_url-\n"
    email = replace(_email(2), text=text, html=f"<p>{long_word}</p>\n.{_email(1).html}")
    transport = _transport(smtp_server, tap)
    results = transport.send(email)
    transport.close()

    assert all(r.ok for r in results)
    wire = tap.client_bytes()
    bodies = re.findall(rb"\r\nDATA\r\n(.*?\r\n)\.\r\n", wire, flags=re.DOTALL)
    assert len(bodies) == 2
    for body, got in zip(bodies, smtp_server.messages, strict=True):
        assert b"\n" not in body.replace(b"\r\n", b"") and b"\r" not in body.replace(b"\r\n", b"")
        lines = body.split(b"\r\n")[:-1]
        # RFC 5321 4.5.3.1.6: 998 characters a line, not counting a dot added for transparency
        assert max(len(x) - x.startswith(b"..") for x in lines) <= 998
        assert b"\r\n..hidden line\r\n..\r\n...two dots\r\n" in body
        assert all(x.startswith(b"..") for x in lines if x.startswith(b"."))
        # the server took the message whole, unstuffed
        assert body.replace(b"\r\n..", b"\r\n.") == got.raw
    recipient = email.recipients[0]
    header = f"List-Unsubscribe: {recipient.headers['List-Unsubscribe']}\r\n".encode()
    assert header in bodies[0]
