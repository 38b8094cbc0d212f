"""Turn one OutgoingEmail and one of its recipients into an RFC 5322 message.

Outbox and SMTP share this, so a file in the outbox is byte-for-byte what SMTP would send.
"""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from digest.transports.base import OutgoingEmail, Recipient

DELIVERY_HEADER = "X-Digest-Delivery"


def personalize(text: str, recipient: Recipient) -> str:
    """Replace each placeholder with this recipient's value."""
    for placeholder, value in recipient.substitutions.items():
        text = text.replace(placeholder, value)
    return text


def _address(email: str, name: str = "") -> Address:
    local, _, domain = email.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def build_message(email: OutgoingEmail, recipient: Recipient, *, now: datetime) -> EmailMessage:
    """A multipart/alternative (text, then html) UTF-8 message with every header set."""
    msg = EmailMessage(policy=SMTP)
    domain = email.from_email.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid(idstring=f"d{recipient.delivery_id}", domain=domain)
    msg["Date"] = format_datetime(now)
    msg["From"] = _address(email.from_email, email.from_name)
    if email.reply_to:
        msg["Reply-To"] = _address(email.reply_to)
    msg["To"] = _address(recipient.email, recipient.name)
    msg["Subject"] = personalize(email.subject, recipient)
    for name, value in {**email.headers, **recipient.headers}.items():
        msg[name] = personalize(value, recipient)
    msg[DELIVERY_HEADER] = str(recipient.delivery_id)
    msg.set_content(personalize(email.text, recipient), subtype="plain", charset="utf-8")
    msg.add_alternative(personalize(email.html, recipient), subtype="html", charset="utf-8")
    return msg
