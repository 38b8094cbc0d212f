"""What every transport takes and gives back; a transport knows nothing of editions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

_NONE: Mapping[str, str] = {}  # the default of a Recipient's maps: read-only, never changed


class Recipient(NamedTuple):
    """One addressee of an OutgoingEmail, with the values substituted into its copy.

    `substitutions` maps placeholder strings found in the subject/html/text (e.g.
    `-unsubscribe_url-`) to this recipient's value; `custom_args` travel with the message
    and come back on provider events (delivery, edition, variant, subscriber ids). A named
    tuple of read-only maps: frozen, and cheap to build at one per recipient.
    """

    delivery_id: int
    email: str
    name: str = ""
    substitutions: Mapping[str, str] = _NONE
    headers: Mapping[str, str] = _NONE  # per-recipient, e.g. List-Unsubscribe
    custom_args: Mapping[str, str] = _NONE


@dataclass(frozen=True)
class OutgoingEmail:
    """One distinct content and the recipients who receive it; rendered once for all of them."""

    subject: str
    html: str
    text: str
    from_email: str
    from_name: str
    reply_to: str | None
    recipients: tuple[Recipient, ...]
    headers: dict[str, str] = field(default_factory=dict)  # shared, e.g. List-Id
    categories: tuple[str, ...] = ()
    send_at: datetime | None = None  # scheduled send (SendGrid: at most 72 h ahead)
    batch_id: str | None = None  # provider batch, so a scheduled send can be cancelled
    preheader: str = ""


class SendResult(NamedTuple):
    """The outcome for one recipient: a provider message id, or the error and what it proves.
    (A named tuple: frozen like a frozen dataclass, and a quarter of its cost to build,
    which counts at one per recipient.)

    - `retryable`: the provider proved it accepted nothing (429, 5xx, refused connection),
      so sending the same message again cannot duplicate it;
    - `in_doubt`: the request went out and no answer came (timeout, connection dropped
      before the answer); it may have been accepted, so it must never be resent as is;
    - `fatal`: the provider refused the account (401, 403, SMTP 535): no call can succeed.
    """

    delivery_id: int
    ok: bool
    message_id: str | None = None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None  # seconds the provider asked us to wait, when it said
    in_doubt: bool = False
    fatal: bool = False


class Transport(Protocol):
    """A way out: outbox folder, SMTP server, SendGrid API."""

    name: str

    def send(self, email: OutgoingEmail) -> list[SendResult]:
        """Deliver `email` to each of its recipients; one result per recipient, in order."""
        ...

    def close(self) -> None: ...
