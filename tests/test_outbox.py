"""The outbox transport: one .eml (+ .html) per delivery, written atomically, with an index."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from digest.errors import TransportError
from digest.transports.base import OutgoingEmail, Recipient
from digest.transports.outbox import OutboxTransport

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
UNSUB = "-unsubscribe_url-"


def _email(*recipients: Recipient, subject: str = "Prism Weekly: Nov 23–29") -> OutgoingEmail:
    return OutgoingEmail(
        subject=subject,
        html=f'<html lang="en"><body><h1>Grüße</h1><a href="{UNSUB}">Unsubscribe</a></body></html>',
        text=f"Grüße\nUnsubscribe: {UNSUB}\n",
        from_email="weekly@digest.example.com",
        from_name="Prism Weekly",
        reply_to="editors@digest.example.com",
        recipients=recipients,
        headers={"List-Unsubscribe": f"<{UNSUB}>"},
    )


def _recipient(delivery_id: int, address: str, token: str = "tok") -> Recipient:
    return Recipient(
        delivery_id=delivery_id,
        email=address,
        name="Ana Díaz",
        substitutions={UNSUB: f"https://digest.example.com/u/{token}"},
    )


def _parse(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_each_recipient_gets_an_eml_that_parses_as_multipart_alternative(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "out", now=lambda: NOW)
    results = outbox.send(_email(_recipient(7, "ana@example.com"), _recipient(8, "bo@example.com")))
    assert [r.ok for r in results] == [True, True]
    assert [r.delivery_id for r in results] == [7, 8]
    msg = _parse(tmp_path / "out" / "000007-ana@example.com.eml")
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert text.get_content_charset() == "utf-8" and html.get_content_charset() == "utf-8"
    assert "Grüße" in text.get_content() and "<h1>Grüße</h1>" in html.get_content()
    assert msg["To"] == "Ana Díaz <ana@example.com>"
    assert msg["From"] == "Prism Weekly <weekly@digest.example.com>"
    assert msg["Subject"] == "Prism Weekly: Nov 23–29"
    assert msg["Date"] == "Mon, 30 Nov 2026 08:00:00 +0000"
    assert results[0].message_id == msg["Message-ID"]


def test_each_file_carries_its_recipients_own_links(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path, now=lambda: NOW)
    outbox.send(
        _email(_recipient(1, "ana@example.com", "A1"), _recipient(2, "bo@example.com", "B2"))
    )
    ana = _parse(tmp_path / "000001-ana@example.com.eml")
    assert ana["List-Unsubscribe"] == "<https://digest.example.com/u/A1>"
    body = ana.get_body(("plain",))
    assert body is not None
    assert "Unsubscribe: https://digest.example.com/u/A1" in body.get_content()
    view = (tmp_path / "000002-bo@example.com.html").read_text(encoding="utf-8")
    assert 'href="https://digest.example.com/u/B2"' in view and UNSUB not in view


def test_sending_a_delivery_again_overwrites_its_file(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path, now=lambda: NOW)
    outbox.send(_email(_recipient(3, "ana@example.com"), subject="first"))
    outbox.send(_email(_recipient(3, "ana@example.com"), subject="second"))
    outbox.send(_email(_recipient(3, "Ana@Example.com"), subject="third"))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["000003-Ana@Example.com.eml", "000003-Ana@Example.com.html"]
    assert _parse(tmp_path / files[0])["Subject"] == "third"


def test_odd_characters_in_an_address_make_a_safe_file_name(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path, now=lambda: NOW)
    (result,) = outbox.send(_email(_recipient(4, "o'neil/../x@example.com")))
    assert result.ok
    assert (tmp_path / "000004-o_neil_.._x@example.com.eml").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_index_links_every_message_including_earlier_runs(tmp_path: Path) -> None:
    first = OutboxTransport(tmp_path, now=lambda: NOW)
    first.send(_email(_recipient(1, "ana@example.com"), subject="Week 47 <draft>"))
    first.close()
    second = OutboxTransport(tmp_path, now=lambda: NOW)
    second.send(_email(_recipient(2, "bo@example.com"), subject="Week 48"))
    second.close()
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    for stem in ("000001-ana@example.com", "000002-bo@example.com"):
        assert f'href="{stem}.eml"' in index
        assert f'href="{stem}.html"' in index
    assert "Week 47 &lt;draft&gt;" in index and "Week 48" in index
    assert "Ana Díaz &lt;ana@example.com&gt;" in index
    assert "2 messages" in index


def test_closing_an_outbox_that_never_sent_writes_nothing(tmp_path: Path) -> None:
    OutboxTransport(tmp_path / "none", now=lambda: NOW).close()
    assert not (tmp_path / "none").exists()


def test_a_write_failure_fails_each_recipient_without_retry(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be")
    outbox = OutboxTransport(blocker, now=lambda: NOW)
    results = outbox.send(_email(_recipient(5, "ana@example.com"), _recipient(6, "bo@example.com")))
    assert [(r.ok, r.retryable) for r in results] == [(False, False), (False, False)]
    assert results[0].error is not None
    assert results[0].error.startswith(
        f"outbox: cannot write {blocker}/000005-ana@example.com.eml: "
    )
    assert "File exists" in results[0].error


def test_an_index_that_cannot_be_written_is_a_transport_error(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path, now=lambda: NOW)
    outbox.send(_email(_recipient(1, "ana@example.com")))
    (tmp_path / "index.html").mkdir()
    with pytest.raises(TransportError, match=r"outbox: cannot write .*index\.html: Is a directory"):
        outbox.close()
