"""Provider events in the store: insert-if-new on the provider's event id, and A/B counts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Insert, distinct, func, select
from sqlalchemy.dialects import postgresql, sqlite

from digest.events import Event, Suppression
from digest.store.schema import changed, deliveries, events, subscribers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantStats:
    """Unique recipients per variant of one edition: each recipient counts once per metric."""

    edition_key: str
    variant: str
    delivered: int
    opens: int
    clicks: int


class EventStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self, items: Sequence[tuple[Event, Suppression | None]], *, now: datetime
    ) -> tuple[int, int, int]:
        """Store each new event and apply its suppression; (stored, duplicates, suppressed).

        One transaction per payload: a failure stores nothing, and SendGrid's retry then
        brings the whole batch again.
        """
        stored = duplicates = suppressed = 0
        with self.engine.begin() as conn:
            for event, suppression in items:
                subscriber_id = _subscriber_id(conn, event)
                if not _insert_new(conn, event, subscriber_id, now):
                    duplicates += 1
                    continue
                stored += 1
                if suppression is not None and subscriber_id is not None:
                    suppressed += _suppress(conn, subscriber_id, suppression, now)
        return stored, duplicates, suppressed

    def count(self, event: str | None = None) -> int:
        query = select(func.count()).select_from(events)
        if event is not None:
            query = query.where(events.c.event == event)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def edition_stats(self, edition_key: str) -> list[VariantStats]:
        """Delivered, unique opens and unique clicks per variant (opens overcount: Apple MPP)."""
        recipient = distinct(events.c.email)
        per_event = (
            select(events.c.variant, events.c.event, func.count(recipient).label("n"))
            .where(
                events.c.edition_key == edition_key,
                events.c.event.in_(("delivered", "open", "click")),
            )
            .group_by(events.c.variant, events.c.event)
        )
        table: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(per_event):
                table.setdefault(row.variant or "", {})[row.event] = int(row.n)
        return [
            VariantStats(
                edition_key, variant, c.get("delivered", 0), c.get("open", 0), c.get("click", 0)
            )
            for variant, c in sorted(table.items())
        ]


def _insert_new(conn: Connection, event: Event, subscriber_id: int | None, now: datetime) -> bool:
    values = {
        "provider": event.provider,
        "provider_event_id": event.provider_event_id,
        "event": event.event,
        "email": event.email,
        "subscriber_id": subscriber_id,
        "delivery_id": event.delivery_id,
        # Test sends go to editors: kept for the record, left out of the edition's figures.
        "edition_key": None if event.test else event.edition_key,
        "variant": event.variant,
        "occurred_at": event.occurred_at,
        "received_at": now,
        "data": event.raw,
    }
    statement = _insert_ignoring_duplicates(conn, values)
    if statement is not None:
        return changed(conn, statement, events.c.id) == 1
    exists = conn.execute(
        select(events.c.id).where(
            events.c.provider == event.provider,
            events.c.provider_event_id == event.provider_event_id,
        )
    ).first()
    if exists is None:
        conn.execute(events.insert().values(**values))
    return exists is None


def _insert_ignoring_duplicates(conn: Connection, values: dict[str, Any]) -> Insert | None:
    # ON CONFLICT DO NOTHING keeps two webhook requests carrying the same event (SendGrid
    # retries while the first is still running) from failing each other's transaction.
    name = conn.dialect.name
    if name == "sqlite":
        return sqlite.insert(events).values(**values).on_conflict_do_nothing()
    if name == "postgresql":
        return postgresql.insert(events).values(**values).on_conflict_do_nothing()
    return None


def _subscriber_id(conn: Connection, event: Event) -> int | None:
    """The subscriber the event is about: the one with the event's address, else the one whose
    delivery (by message id or delivery id) went to that address. A `subscriber_id` custom
    arg that names someone else is logged and ignored: a bounce must suppress the address
    that bounced, whatever id a message carried."""
    found = _by_address(conn, event.email) or _by_delivery(conn, event)
    if event.subscriber_id is not None and event.subscriber_id != found:
        log.warning(
            "event %s: custom arg subscriber_id=%s disagrees with the address (subscriber %s); "
            "ignored",
            event.provider_event_id,
            event.subscriber_id,
            found,
        )
    return found


def _by_address(conn: Connection, email: str) -> int | None:
    row = conn.execute(select(subscribers.c.id).where(subscribers.c.email == email)).first()
    return None if row is None else int(row.id)


def _by_delivery(conn: Connection, event: Event) -> int | None:
    """The subscriber of the delivery this event reports on, if it went to the event's address:
    by delivery id first (its primary key), then by message id (no index: a scan of the
    ledger, left for events that carry no delivery id)."""
    where = []
    if event.delivery_id is not None:
        where.append(deliveries.c.id == event.delivery_id)
    if event.message_id:
        where.append(deliveries.c.provider_message_id == event.message_id)
    for condition in where:
        row = conn.execute(
            select(deliveries.c.subscriber_id).where(condition, deliveries.c.email == event.email)
        ).first()
        if row is not None:
            return int(row.subscriber_id)
    return None


def _suppress(conn: Connection, subscriber_id: int, suppression: Suppression, now: datetime) -> int:
    statement = (
        subscribers.update()
        .where(
            subscribers.c.id == subscriber_id,
            subscribers.c.status.in_(sorted(suppression.replaces)),
        )
        .values(status=suppression.status, status_reason=suppression.reason, updated_at=now)
    )
    return changed(conn, statement, subscribers.c.id)
