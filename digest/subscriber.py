"""The Subscriber model and its statuses: a leaf module every stage and the store share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
# Statuses that mean "never send": only an explicit new opt-in may lift them.
SUPPRESSED = frozenset({"unsubscribed", "bounced", "complained"})


@dataclass(frozen=True)
class Subscriber:
    """One subscriber as stored; `email` is normalized (lower-cased domain and local part)."""

    email: str
    name: str = ""
    topics: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()  # digest keys chosen; empty: the project's first digest
    timezone: str = "UTC"
    locale: str = "en"
    status: str = "active"
    id: int | None = None
    consent_at: datetime | None = None
    consent_method: str = ""  # "import", "double-opt-in", "cli"
    consent_source: str = ""  # file name, form URL, ...
    consent_ip: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class SubscriberRecord:
    """A subscriber with the bookkeeping `digest subscribers show` prints."""

    subscriber: Subscriber
    status_reason: str
    created_at: datetime
    updated_at: datetime
    deliveries: dict[str, int]  # delivery rows by state


@dataclass(frozen=True)
class ConsentRecord:
    id: int
    subscriber_id: int
    email: str
    name: str
    topics: tuple[str, ...]
    method: str
    source: str
    ip: str
    given_at: datetime | None
    confirmed_at: datetime | None


class SubscriberRow(NamedTuple):
    """A subscriber read from a list, as plain values in the store's column order: a million
    of these cost far less than Subscribers. `given` names the fields the list gave a value
    for (an update of a known subscriber changes only those)."""

    email: str
    name: str
    topics: tuple[str, ...]
    digests: tuple[str, ...]
    timezone: str
    locale: str
    status: str
    consent_at: datetime | None
    consent_method: str
    consent_source: str
    consent_ip: str
    given: frozenset[str] = frozenset()

    def subscriber(self) -> Subscriber:
        return Subscriber(
            email=self.email, name=self.name, topics=self.topics, digests=self.digests,
            timezone=self.timezone, locale=self.locale, status=self.status,
            consent_at=self.consent_at, consent_method=self.consent_method,
            consent_source=self.consent_source, consent_ip=self.consent_ip,
        )  # fmt: skip


# A SubscriberRow from a tuple of its 12 values, built in C: an import makes one or two a
# row, and the named tuple's own constructor (a Python function) costs three times more.
as_row: Callable[[tuple[Any, ...]], SubscriberRow] = partial(tuple.__new__, SubscriberRow)
