"""Provider events: parse SendGrid's Event Webhook payload and apply it to the store.

SendGrid sends the same event more than once (it retries for 24 h), so every event is
stored once on its `sg_event_id`, and only a newly stored event may change a subscriber.
Custom args stamped on each message (delivery_id, edition, variant, subscriber_id) come
back as top-level fields of the event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from digest.errors import InputError

PROVIDER = "sendgrid"
EVENT_CHUNK = 1000  # events stored per transaction
# Analytics events are stored as they are; the rest may also suppress an address.
ANALYTICS = frozenset({"processed", "delivered", "deferred", "open", "click"})
KNOWN = ANALYTICS | {
    "bounce",
    "dropped",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",  # stored only: lifting a suppression takes a new opt-in
}
REQUIRED = ("sg_event_id", "email", "event", "timestamp")
# SendGrid's `reason` on a dropped event, for addresses it will never deliver to.
DROPPED_SUPPRESSES = {
    "Invalid": "bounced",
    "Bounced Address": "bounced",
    "Unsubscribed Address": "unsubscribed",
    "Spam Reporting Address": "complained",
}


@dataclass(frozen=True)
class Event:
    """One provider event, normalized; `raw` is the event exactly as the provider sent it."""

    provider: str
    provider_event_id: str
    event: str
    email: str
    occurred_at: datetime
    subscriber_id: int | None = None
    delivery_id: int | None = None
    edition_key: str | None = None
    variant: str | None = None
    reason: str = ""
    type: str = ""  # bounce type: "bounce" (hard) or "blocked" (soft)
    category: tuple[str, ...] = ()
    url: str = ""
    message_id: str = ""  # SendGrid's X-Message-Id (sg_message_id up to its first dot)
    test: bool = False  # a test send to editors (custom arg test=true)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ParsedEvents:
    events: tuple[Event, ...]
    ignored: int  # unknown types and events missing a required field


@dataclass(frozen=True)
class Suppression:
    """The status an event moves a subscriber to, and which statuses it may replace."""

    status: str
    reason: str
    replaces: frozenset[str]


@dataclass(frozen=True)
class EventReport:
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    suppressed: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "ignored": self.ignored,
            "suppressed": self.suppressed,
        }


class EventLedger(Protocol):
    """The store operation applying events needs (implemented by store.events.EventStore)."""

    def record(
        self, items: Sequence[tuple[Event, Suppression | None]], *, now: datetime
    ) -> tuple[int, int, int]: ...


class HasEvents(Protocol):
    @property
    def events(self) -> EventLedger: ...


def parse_sendgrid_events(payload: bytes, *, source: str = "payload") -> list[Event]:
    """The well-formed events of a known type in a SendGrid payload (a JSON array)."""
    return list(parse_sendgrid_payload(payload, source=source).events)


def parse_sendgrid_payload(payload: bytes, *, source: str = "payload") -> ParsedEvents:
    """Parse a JSON array of SendGrid events; InputError naming `source` if it is not one.

    An unknown event type or an event missing a required field is skipped and counted,
    not fatal: one odd event must not hold back the rest of the batch.
    """
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise InputError(source, f"not valid JSON: {_reason(exc)}", line=line) from None
    if not isinstance(data, list):
        raise InputError(source, f"expected a JSON array of events, got {type(data).__name__}")
    events: list[Event] = []
    ignored = 0
    for item in data:
        event = _event(item)
        if event is None:
            ignored += 1
        else:
            events.append(event)
    return ParsedEvents(tuple(events), ignored)


def _reason(exc: Exception) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


def _event(item: object) -> Event | None:
    if not isinstance(item, dict) or any(item.get(k) in (None, "") for k in REQUIRED):
        return None
    name = str(item["event"])
    occurred = _timestamp(item["timestamp"])
    if name not in KNOWN or occurred is None:
        return None
    category = item.get("category", ())
    return Event(
        provider=PROVIDER,
        provider_event_id=str(item["sg_event_id"])[:128],
        event=name,
        email=str(item["email"]).strip().lower(),
        occurred_at=occurred,
        subscriber_id=_int(item.get("subscriber_id")),
        delivery_id=_int(item.get("delivery_id")),
        edition_key=_text(item.get("edition")),
        variant=_text(item.get("variant")),
        reason=str(item.get("reason") or ""),
        type=str(item.get("type") or ""),
        category=(category,) if isinstance(category, str) else tuple(str(c) for c in category),
        url=str(item.get("url") or ""),
        message_id=str(item.get("sg_message_id") or "").partition(".")[0][:256],
        test=str(item.get("test", "")).lower() == "true",
        raw=item,
    )


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _int(value: object) -> int | None:
    # Custom args come back as strings; anything not a plain integer is not ours.
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() else None


def _text(value: object) -> str | None:
    return None if value in (None, "") else str(value)


def suppression_for(event: Event) -> Suppression | None:
    """What an event means for the address: None for analytics and soft bounces."""
    anything = frozenset({"pending", "active", "unsubscribed", "bounced"})
    active = frozenset({"pending", "active"})
    if event.event == "spamreport":
        # The strongest signal: it replaces an earlier unsubscribe or bounce.
        return Suppression("complained", "spam report", anything)
    if event.event == "bounce" and event.type != "blocked":
        return Suppression("bounced", f"bounce: {event.reason}".strip(": "), active)
    if event.event in ("unsubscribe", "group_unsubscribe"):
        return Suppression("unsubscribed", f"provider {event.event}", active)
    if event.event == "dropped":
        status = DROPPED_SUPPRESSES.get(event.reason.strip())
        if status == "complained":
            return Suppression(status, f"dropped: {event.reason}", anything)
        if status is not None:
            return Suppression(status, f"dropped: {event.reason}", active)
    return None


def apply_events(
    store: HasEvents, events: Sequence[Event], *, now: datetime, ignored: int = 0
) -> EventReport:
    """Store new events and apply their suppressions, one short transaction per chunk.

    Short transactions keep SQLite's single writer free for a send running meanwhile.
    Events are stored once on their provider id, so after a failure part way, importing
    the same events again stores only what is missing.
    """
    totals = [0, 0, 0]  # stored, duplicates, suppressed
    for start in range(0, len(events), EVENT_CHUNK):
        chunk = events[start : start + EVENT_CHUNK]
        counts = store.events.record([(e, suppression_for(e)) for e in chunk], now=now)
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    return EventReport(totals[0], totals[1], ignored, totals[2])
