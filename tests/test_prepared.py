"""A content prepared once gives each recipient the very bytes digest.mime builds from scratch.

The message builder picks a random MIME boundary and Message-ID, and DKIM stamps the
time: each comparison gives the slow path the prepared message's boundary and id and
fixes the clock, so every other byte must match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.headerregistry import Address

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from editions import TOPICS, make_edition
from fake_smtp import FakeSmtp
from fake_smtp import smtp_server as smtp_server_fixture  # noqa: F401

from digest import compose
from digest.config import Config
from digest.dkim import DkimKey, verify
from digest.mime import POLICY, build_message, message_bytes
from digest.prepared import _QP_MAP, Message, PreparedEmail, _qp
from digest.tokens import LinkSigner
from digest.transports.base import OutgoingEmail, Recipient
from digest.transports.smtp import SmtpTransport

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
SIGNED_AT = 1_795_000_000.0
UNSUB, PREFS = "-unsubscribe_url-", "-preferences_url-"


@pytest.fixture(scope="module")
def key() -> DkimKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return DkimKey("digest.example.com", "s2026", pem)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """DKIM's t= tag, in dkimpy and in the prepared signer alike."""
    monkeypatch.setattr("time.time", lambda: SIGNED_AT)


@dataclass(frozen=True)
class _Row:
    id: int
    subscriber_id: int
    email: str
    name: str
    variant: str = "A"
    content_key: str = ""


NAMES = ["Ana", "Zoë Müller-Lüdenscheidt", 'Dr. "Quoted" Name, Jr.', "", "Reader " + "x" * 60]


def _edition_email(config: Config, count: int = 12) -> OutgoingEmail:
    """The sample edition as the digest's real template renders it, to `count` readers."""
    edition = make_edition(2, TOPICS, status="approved")
    content = compose.default_renderer(config, edition)(TOPICS, "A")
    rows = [
        _Row(i, i * 7919, f"reader{i}@example.org", NAMES[i % len(NAMES)])
        for i in range(1, count + 1)
    ]
    links = LinkSigner(config.site.base_url, "prepared-test-secret")
    recipients = compose.recipients(rows, links=links, edition_key=edition.key)
    return compose.compose(content, recipients, config=config, edition=edition)


def _built(
    email: OutgoingEmail, recipient: Recipient, like: Message, dkim: DkimKey | None
) -> bytes:
    """What build_message + message_bytes write, with `like`'s boundary and Message-ID."""
    message = build_message(email, recipient, now=NOW)
    message.replace_header("Message-ID", like.message_id)
    found = re.search(rb'boundary="([^"]+)"', like.as_bytes())
    assert found is not None
    message.set_boundary(found.group(1).decode())
    utf8 = not (email.from_email + recipient.email).isascii()
    return message_bytes(message, dkim, utf8=utf8)


def _assert_same(email: OutgoingEmail, dkim: DkimKey | None = None) -> PreparedEmail:
    prepared = PreparedEmail(email, dkim=dkim)
    for recipient in email.recipients:
        got = prepared.message(recipient, now=NOW)
        assert got.as_bytes() == _built(email, recipient, got, dkim), recipient
    return prepared


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "dkim"])
def test_each_reader_of_the_edition_gets_the_bytes_the_builder_writes(
    config: Config, key: DkimKey, signed: bool
) -> None:
    email = _edition_email(config)
    prepared = _assert_same(email, key if signed else None)
    assert prepared.rebuilt == 0  # every message came from the prepared parts
    first, second = (prepared.message(r, now=NOW) for r in email.recipients[:2])
    assert first.body[0] is second.body[0]  # the encoded HTML is shared, not rebuilt


def _email(text: str, html: str, values: list[str], **changes: object) -> OutgoingEmail:
    recipients = tuple(
        Recipient(
            delivery_id=i,
            email=f"r{i}@example.com",
            name=f"R {i}",
            substitutions={UNSUB: value, PREFS: f"https://p.example/{i}"},
            headers={"List-Unsubscribe": f"<{value}>", "List-Unsubscribe-Post": "One-Click"},
        )
        for i, value in enumerate(values, start=1)
    )
    base = OutgoingEmail(
        subject="Weekly",
        html=html,
        text=text,
        from_email="weekly@digest.example.com",
        from_name="Prism Weekly",
        reply_to=None,
        recipients=recipients,
        headers={"List-Id": "<weekly.digest.example.com>"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# Values of every length from 1 to 79 move each soft line break and escape across the wrap.
VALUES = [f"https://d.example/u/{'=' * (n % 3)}{'t' * n}" for n in range(1, 80)]
FILLER = "\n".join(f"Line {i}: café, naïve, 50% = half; a=b" for i in range(12)) + "\n"


@pytest.mark.parametrize(
    "text, html",
    [
        # one long line with the link near its end (MJML's output), and a tail of static text
        (
            FILLER + f"Unsubscribe: {UNSUB}\n",
            FILLER + "<p>" + "The café=bar story, " * 30 + f'<a href="{UNSUB}">u</a> ' * 2,
        ),
        # the link at the very start of a long line, and a line ending in white space
        (
            FILLER + f"{UNSUB} " + "y" * 200 + " \n",
            FILLER + f"{UNSUB}{'z' * 150}\t\n<p>{PREFS}</p>\n",
        ),
        # a link in the first ten lines, where the email package samples QP against base64
        (f"{UNSUB}\n" + FILLER + "=" * 100 + "\n", FILLER + f"<a href='{PREFS}'>{UNSUB}</a>\n"),
        # short lines only: 7bit and 8bit, no quoted-printable
        ("Hi\n" * 12 + f"{UNSUB}\n", "<p>Grüße</p>\n" * 12 + f"<a href='{UNSUB}'>x</a>\n"),
    ],
    ids=["long-line-end", "long-line-start", "sniffed", "seven-and-eight-bit"],
)
def test_every_wrap_position_gives_the_same_bytes(text: str, html: str, key: DkimKey) -> None:
    # (short values keep the short-line case in 7bit/8bit: a longer line would be encoded)
    # short values keep the short-line case in 7bit/8bit: longer lines would be encoded
    email = _email(text, html, VALUES if len(text) > 100 else VALUES[:40])
    assert _assert_same(email).rebuilt == 0
    assert _assert_same(replace(email, recipients=email.recipients[:6]), key).rebuilt == 0


@pytest.mark.parametrize(
    "change",
    [
        {"text": f"Hi {UNSUB}\n"},  # ten lines or fewer in QP: encoded another way
        {"html": ("日本語のテキスト" * 20 + "\n") * 12 + UNSUB},  # base64 beats QP
        {"recipients": ()},  # set below: an address that needs SMTPUTF8
        {"headers": {"Content-Language": "en"}},  # the email package moves it into a part
    ],
    ids=["short-qp", "base64", "utf8-address", "content-header"],
)
def test_what_the_prepared_parts_do_not_cover_is_built_whole_with_the_same_bytes(
    change: dict[str, object],
) -> None:
    email = _email(FILLER + f"{UNSUB}\n", "<p>" + "x" * 100 + f"{UNSUB}</p>\n", VALUES[:3])
    if change == {"recipients": ()}:
        change = {
            "recipients": tuple(r._replace(email="zoë@exämple.com") for r in email.recipients)
        }
    email = replace(email, **change)  # type: ignore[arg-type]
    assert _assert_same(email).rebuilt == len(email.recipients)


def test_a_personal_subject_and_shared_header_are_filled_in_per_reader() -> None:
    email = _email(
        FILLER + UNSUB + "\n",
        FILLER + "<p>hi</p>\n",
        VALUES[:4],
        subject=f"Your digest ({PREFS})",
        headers={"List-Id": "<weekly.digest.example.com>", "X-Prefs": PREFS},
    )
    prepared = _assert_same(email)
    subjects = {
        prepared.message(r, now=NOW).head.split(b"Subject: ")[1][:40] for r in email.recipients
    }
    assert len(subjects) == 4


def test_over_the_wire_each_message_is_the_built_one_signed_and_dot_stuffed(
    config: Config, key: DkimKey, smtp_server: FakeSmtp
) -> None:
    email = _edition_email(config, count=9)
    email = replace(email, text=".hidden line\n..two dots\n" + email.text)
    transport = SmtpTransport(
        smtp_server.settings(connections=3), username=None, password=None, now=lambda: NOW, dkim=key
    )
    results = transport.send(email)
    transport.close()

    assert all(r.ok for r in results) and smtp_server.connections == 3
    received = {m.rcpt_tos[0]: m.raw for m in smtp_server.messages}
    assert len(received) == len(smtp_server.messages) == 9
    public = key.public_record()
    for recipient, result in zip(email.recipients, results, strict=True):
        raw = received[recipient.email]
        assert f"Message-ID: {result.message_id}".encode() in raw
        like = Message(str(result.message_id), raw.partition(b"\r\n\r\n")[0], ())
        assert raw == _built(email, recipient, like, key)
        assert verify(raw, lambda name, timeout=5: public)


@pytest.mark.parametrize(
    "name, value",
    [
        ("To", Address("Reader 12", "reader12", "example.org")),
        ("To", Address("", "a.b+c", "example.org")),
        ("To", Address("Dr. Who", "who", "example.org")),  # quoted by the email package
        ("To", Address("x" * 70, "long", "example.org")),  # too long for one line
        ("Message-ID", "<179613090960.8449.2900298415049187952.d1@digest.example.com>"),
        ("Message-ID", "<1.2.3.d99999999999@a-very-long-sending-domain.digest.example.com>"),
        ("X-Digest-Delivery", "123456"),
        ("Subject", "Hello  there"),  # two spaces
        ("Subject", "=?utf-8?q?encoded?="),
        ("List-Unsubscribe", "<https://digest.example.com/u/" + "t" * 120 + ">"),
        ("List-Unsubscribe", "<https://digest.example.com/u/=?x?=>"),
    ],
)
def test_a_header_written_without_the_parser_is_what_the_parser_writes(
    name: str, value: str | Address
) -> None:
    prepared = PreparedEmail(_email(FILLER, FILLER, VALUES[:1]))
    assert prepared._fold(name, value) == POLICY.fold_binary(
        *POLICY.header_store_parse(name, value)
    )


def test_the_quoted_printable_translation_is_the_email_packages_for_every_byte() -> None:
    data = bytes(range(256)) * 2 + b"a=b\r\n=\xff=="
    assert _qp(data) == data.decode("latin-1").translate(_QP_MAP)


@pytest.mark.parametrize("boundary", ["===============0000000000000000001==", "=_boundary.1"])
def test_contents_share_one_mime_frame_whatever_their_boundary(
    boundary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = _email(FILLER + f"{UNSUB}\n", FILLER + f"<p>{'x' * 100}{UNSUB}</p>\n", VALUES[:3])
    assert _assert_same(email).rebuilt == 0  # a usual random boundary
    monkeypatch.setattr("digest.prepared.Generator._make_boundary", lambda text: boundary)
    prepared = _assert_same(email)
    assert prepared.boundary == boundary and prepared.rebuilt == 0
    message = prepared.message(email.recipients[0], now=NOW).as_bytes()
    assert f'boundary="{boundary}"'.encode() in message
    assert message.count(f"\r\n--{boundary}".encode()) == 3  # two parts, then the end
