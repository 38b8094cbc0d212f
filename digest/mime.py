"""Turn one OutgoingEmail and one of its recipients into an RFC 5322 message.

Outbox and SMTP share this, so a file in the outbox is byte-for-byte what SMTP would send.
"""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, make_msgid
from typing import Any

from digest.dkim import DkimKey, sign
from digest.transports.base import OutgoingEmail, Recipient

Header = tuple[str, str | Address]

DELIVERY_HEADER = "X-Digest-Delivery"
# Mail clients read these headers as they stand: an RFC 2047 encoded-word (which Python
# writes for any long header without spaces) hides the URL and so the one-click button.
RAW_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
MAX_LINE = 78  # RFC 5322's recommended line length; folding happens at whitespace only
HARD_LIMIT = 998  # RFC 5322's hard limit on any line


def fold_raw(name: str, value: str, linesep: str = "\r\n") -> str:
    """`Name: value` folded only at whitespace, never encoded; ValueError if it cannot be."""
    if not value.isascii() or "\r" in value or "\n" in value:
        raise ValueError(f"{name}: only printable ASCII on one line can be written raw")
    lines: list[str] = []
    line = f"{name}:"
    for word in value.split():
        if len(line) + 1 + len(word) > MAX_LINE and line.strip() != f"{name}:":
            lines.append(line)
            line = ""
        line += f" {word}"
    lines.append(line)
    if any(len(x) > HARD_LIMIT for x in lines):
        raise ValueError(f"{name}: a word longer than {HARD_LIMIT} characters cannot be sent")
    return linesep.join(lines) + linesep


class _RawListHeaders(EmailPolicy):
    """policy.SMTP, except that RAW_HEADERS are written as they are (see fold_raw)."""

    def fold(self, name: str, value: Any) -> str:
        if name.lower() in RAW_HEADERS:
            return fold_raw(name, str(value), self.linesep)
        return super().fold(name, value)

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() in RAW_HEADERS:
            return fold_raw(name, str(value), self.linesep).encode("ascii")
        return super().fold_binary(name, value)


POLICY = _RawListHeaders(linesep="\r\n")


def personalize(text: str, recipient: Recipient) -> str:
    """Replace each placeholder with this recipient's value."""
    for placeholder, value in recipient.substitutions.items():
        text = text.replace(placeholder, value)
    return text


def _address(email: str, name: str = "") -> Address:
    local, _, domain = email.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def header_items(email: OutgoingEmail, recipient: Recipient, *, now: datetime) -> list[Header]:
    """The message's headers, in order, before the MIME ones (a fresh Message-ID each call)."""
    domain = email.from_email.rpartition("@")[2] or "localhost"
    items: list[Header] = [
        ("Message-ID", make_msgid(idstring=f"d{recipient.delivery_id}", domain=domain)),
        ("Date", format_datetime(now)),
        ("From", _address(email.from_email, email.from_name)),
    ]
    if email.reply_to:
        items.append(("Reply-To", _address(email.reply_to)))
    items.append(("To", _address(recipient.email, recipient.name)))
    items.append(("Subject", personalize(email.subject, recipient)))
    for name, value in {**email.headers, **recipient.headers}.items():
        items.append((name, personalize(value, recipient)))
    items.append((DELIVERY_HEADER, str(recipient.delivery_id)))
    return items


def build_message(email: OutgoingEmail, recipient: Recipient, *, now: datetime) -> EmailMessage:
    """A multipart/alternative (text, then html) UTF-8 message with every header set."""
    msg = EmailMessage(policy=POLICY)
    for name, value in header_items(email, recipient, now=now):
        msg[name] = value
    msg.set_content(personalize(email.text, recipient), subtype="plain", charset="utf-8")
    msg.add_alternative(personalize(email.html, recipient), subtype="html", charset="utf-8")
    return msg


def message_bytes(message: EmailMessage, dkim: DkimKey | None, *, utf8: bool = False) -> bytes:
    """The message as sent, CRLF line ends, DKIM-signed when a key is given."""
    data = message.as_bytes(policy=POLICY.clone(utf8=True) if utf8 else POLICY)
    return sign(data, dkim) if dkim is not None else data
