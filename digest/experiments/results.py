"""What happened to each variant, from the provider's events: each delivery row counts once
per measure, whatever the duplicates, replays and retries in the stream.

An event belongs to a delivery row by the `delivery_id` custom arg stamped on every message
(and it must not name another edition), or else by SendGrid's message id together with the
address (one request, one message id, one row per address in it). Never by the address
alone: the same people get other editions, and their events arrive in the same stream.
Rows of the rest of the list (variant `B:rest`) are the winner's send, not the test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from digest.experiments.assign import is_test_row

UNSUBSCRIBES = frozenset({"unsubscribe", "group_unsubscribe"})
COUNTED = frozenset({"delivered", "open", "click", "spamreport", "bounce"} | UNSUBSCRIBES)
# Each metric: (numerator, denominator) among the row flags below.
METRICS = {
    "clicks": ("clicked", "delivered"),
    "human_opens": ("human_opened", "delivered"),
    "opens": ("opened", "delivered"),
    "click_to_open": ("clicked", "engaged"),
}


@dataclass(frozen=True)
class DeliveryFact:
    """A delivery row as results need it."""

    id: int
    variant: str
    state: str
    email: str
    message_id: str | None = None  # the provider's, as recorded when sent
    sent_at: datetime | None = None


@dataclass(frozen=True)
class EventFact:
    """A stored provider event as results need it."""

    event: str
    email: str
    delivery_id: int | None = None
    edition_key: str | None = None
    message_id: str = ""  # SendGrid's sg_message_id: "<X-Message-Id>.<filter suffix>"
    machine_open: bool = False  # sg_machine_open: Apple Mail Privacy Protection and the like


@dataclass
class _Row:
    variant: str
    sent: bool
    flags: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class VariantCounts:
    """Per variant of the test: rows (recipients) and rows with each kind of event."""

    recipients: int = 0
    delivered: int = 0
    unique_opens: int = 0
    unique_human_opens: int = 0
    unique_clicks: int = 0
    unsubscribes: int = 0
    complaints: int = 0
    bounces: int = 0
    engaged: int = 0  # human opens or clicks (a click proves a person opened it)

    def metric(self, name: str) -> tuple[int, int]:
        """(successes, denominator) of a metric: over delivered, or over engaged rows for
        click_to_open."""
        top, bottom = METRICS[name]
        numbers = {
            "clicked": self.unique_clicks,
            "human_opened": self.unique_human_opens,
            "opened": self.unique_opens,
            "delivered": self.delivered,
            "engaged": self.engaged,
        }
        return numbers[top], numbers[bottom]


@dataclass(frozen=True)
class Results:
    variants: dict[str, VariantCounts]
    rest: int  # rows of the rest of the list (the winner's send)
    unattributed: int  # events of this stream that matched no row of the edition


def count(
    edition_key: str,
    variants: Sequence[str],
    rows: Iterable[DeliveryFact],
    events: Iterable[EventFact],
) -> Results:
    """Count each test row once per measure; `variants` fixes the order (and lists the
    variants that have no row yet)."""
    by_id: dict[int, _Row] = {}
    by_message: dict[tuple[str, str], _Row] = {}
    rest = 0
    for fact in rows:
        if not is_test_row(fact.variant):
            rest += 1
            continue
        row = _Row(fact.variant, fact.state == "sent")
        by_id[fact.id] = row
        if fact.message_id:
            by_message[(_message_key(fact.message_id), fact.email.lower())] = row
    unattributed = 0
    for event in events:
        if event.event not in COUNTED:
            continue
        found = _attribute(event, edition_key, by_id, by_message)
        if found is None:
            unattributed += 1
        else:
            found.flags.update(_flags(event))
    return Results(_tally(variants, by_id.values()), rest, unattributed)


def _message_key(message_id: str) -> str:
    return message_id.strip().strip("<>").split(".", 1)[0]


def _attribute(
    event: EventFact,
    edition_key: str,
    by_id: dict[int, _Row],
    by_message: dict[tuple[str, str], _Row],
) -> _Row | None:
    if event.edition_key is not None and event.edition_key != edition_key:
        return None
    if event.delivery_id is not None:
        return by_id.get(event.delivery_id)
    if event.message_id:
        return by_message.get((_message_key(event.message_id), event.email.lower()))
    return None


def _flags(event: EventFact) -> set[str]:
    name = event.event
    if name == "open":
        # an open or a click proves the message was delivered
        return {"delivered", "opened"} if event.machine_open else {"delivered", "opened", "human"}
    if name == "click":
        return {"delivered", "clicked"}
    if name in UNSUBSCRIBES:
        return {"unsubscribed"}
    return {{"delivered": "delivered", "spamreport": "complained", "bounce": "bounced"}[name]}


def _tally(variants: Sequence[str], rows: Iterable[_Row]) -> dict[str, VariantCounts]:
    totals = {v: dict.fromkeys(VariantCounts.__dataclass_fields__, 0) for v in variants}
    for row in rows:
        t = totals.setdefault(row.variant, dict.fromkeys(VariantCounts.__dataclass_fields__, 0))
        f = row.flags
        t["recipients"] += row.sent
        t["delivered"] += "delivered" in f
        t["unique_opens"] += "opened" in f
        t["unique_human_opens"] += "human" in f
        t["unique_clicks"] += "clicked" in f
        t["unsubscribes"] += "unsubscribed" in f
        t["complaints"] += "complained" in f
        t["bounces"] += "bounced" in f
        t["engaged"] += bool(f & {"human", "clicked"})
    return {v: VariantCounts(**t) for v, t in totals.items()}
