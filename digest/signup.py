"""Double opt-in: what a signup and a confirmation do, for every status an address can have.

A form anyone can fill in must not change what the address's owner (or a bounce) said:

| status before  | signup                                   | mail sent         |
|----------------|------------------------------------------|-------------------|
| unknown        | new `pending` subscriber + signup record | confirmation      |
| pending        | signup record; subscriber unchanged      | confirmation      |
| unsubscribed   | signup record; subscriber unchanged      | confirmation      |
| active         | nothing                                  | reminder          |
| bounced        | nothing                                  | none              |
| complained     | nothing                                  | none              |

Only the confirmation link of a signup record changes the subscriber: it becomes `active`
with that record's topics and consent, and the consent it replaces stays in the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from digest.subscriber import ConsentRecord, Subscriber
from digest.tokens import BAD_LINK, BadToken


class SignupSubscribers(Protocol):
    def get(self, subscriber_id: int) -> Subscriber | None: ...
    def get_by_email(self, email: str) -> Subscriber | None: ...
    def add(self, subscriber: Subscriber, *, now: datetime) -> Subscriber: ...
    def set_status(
        self, subscriber_id: int, status: str, *, reason: str, now: datetime
    ) -> bool: ...


class SignupConsents(Protocol):
    def add_signup(
        self,
        subscriber_id: int,
        email: str,
        name: str,
        topics: tuple[str, ...],
        *,
        source: str,
        ip: str,
        now: datetime,
    ) -> int: ...
    def get(self, consent_id: int) -> ConsentRecord | None: ...
    def confirm(self, consent_id: int, *, now: datetime) -> Subscriber | None: ...


class SignupStore(Protocol):
    """The store operations signing up and confirming use (digest.store.Store)."""

    @property
    def subscribers(self) -> SignupSubscribers: ...
    @property
    def consents(self) -> SignupConsents: ...


NEVER_MAILED = frozenset({"bounced", "complained"})
SOURCE = "web form"

Mail = Literal["confirm", "reminder", "none"]


@dataclass(frozen=True)
class Signup:
    """What a signup did: the subscriber as stored, which mail to send, the signup record."""

    subscriber: Subscriber
    mail: Mail
    consent_id: int | None = None


@dataclass(frozen=True)
class Confirmation:
    subscriber: Subscriber
    newly: bool  # False: the address was already active (the link was opened again)


def sign_up(
    store: SignupStore,
    email: str,
    name: str,
    topics: tuple[str, ...],
    *,
    ip: str,
    now: datetime,
    timezone: str = "UTC",
) -> Signup:
    """Apply a web signup for a normalized `email` (see the module's table)."""
    existing = store.subscribers.get_by_email(email)
    if existing is None:
        new = store.subscribers.add(
            Subscriber(
                email=email,
                name=name,
                topics=topics,
                timezone=timezone,
                status="pending",
                consent_at=now,
                consent_method="double-opt-in",
                consent_source=SOURCE,
                consent_ip=ip,
            ),
            now=now,
        )
        return Signup(new, "confirm", _record(store, new, name, topics, ip, now))
    if existing.status == "active":
        return Signup(existing, "reminder")
    if existing.status in NEVER_MAILED:
        return Signup(existing, "none")
    return Signup(existing, "confirm", _record(store, existing, name, topics, ip, now))


def _record(
    store: SignupStore,
    subscriber: Subscriber,
    name: str,
    topics: tuple[str, ...],
    ip: str,
    now: datetime,
) -> int:
    assert subscriber.id is not None
    return store.consents.add_signup(
        subscriber.id, subscriber.email, name, topics, source=SOURCE, ip=ip, now=now
    )


def confirm(store: SignupStore, payload: dict[str, Any], *, now: datetime) -> Confirmation:
    """Apply a confirmation link's payload; BadToken when it may not (any longer) confirm."""
    subscriber = store.subscribers.get(payload["s"])
    if subscriber is None or subscriber.id is None:
        raise BadToken(BAD_LINK)
    if subscriber.status in NEVER_MAILED:
        raise BadToken("this address can no longer be subscribed from this link")
    consent_id = payload.get("c")
    if not isinstance(consent_id, int):  # a link sent before signups were recorded
        if subscriber.status == "pending":
            store.subscribers.set_status(subscriber.id, "active", reason="confirmed", now=now)
            return Confirmation(_stored(store, subscriber.id), newly=True)
        return _already(subscriber)
    record = store.consents.get(consent_id)
    if record is None or record.subscriber_id != subscriber.id:
        raise BadToken(BAD_LINK)
    if record.confirmed_at is not None or subscriber.status == "active":
        return _already(subscriber)
    confirmed = store.consents.confirm(consent_id, now=now)
    if confirmed is None:  # confirmed by a concurrent click
        return _already(_stored(store, subscriber.id))
    return Confirmation(confirmed, newly=True)


def _already(subscriber: Subscriber) -> Confirmation:
    if subscriber.status != "active":
        # Unsubscribed since this link was sent: only a new signup may bring it back.
        raise Unsubscribed()
    return Confirmation(subscriber, newly=False)


def _stored(store: SignupStore, subscriber_id: int) -> Subscriber:
    found = store.subscribers.get(subscriber_id)
    assert found is not None
    return found


class Unsubscribed(BadToken):
    """An old confirmation link for an address that has since unsubscribed."""

    def __init__(self) -> None:
        super().__init__(
            "This address was unsubscribed after the link was sent. Sign up again to resubscribe."
        )
