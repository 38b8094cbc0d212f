"""Subscribers in the store: lookups, upserts, status changes, and a streaming audience."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, func, select

from digest.store.schema import subscribers
from digest.subscribers import Subscriber


def _to_subscriber(row: Row[Any]) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        name=row.name,
        topics=tuple(row.topics or ()),
        timezone=row.timezone,
        locale=row.locale,
        status=row.status,
        consent_at=row.consent_at,
        consent_method=row.consent_method,
        consent_source=row.consent_source,
        consent_ip=row.consent_ip,
    )


def _values(s: Subscriber) -> dict[str, Any]:
    return {
        "email": s.email,
        "name": s.name,
        "topics": list(s.topics),
        "timezone": s.timezone,
        "locale": s.locale,
        "status": s.status,
        "consent_at": s.consent_at,
        "consent_method": s.consent_method,
        "consent_source": s.consent_source,
        "consent_ip": s.consent_ip,
    }


class SubscriberStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, subscriber_id: int) -> Subscriber | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        return None if row is None else _to_subscriber(row)

    def get_by_email(self, email: str) -> Subscriber | None:
        """Look up by address, case-insensitively (stored addresses are lower-case)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(subscribers).where(subscribers.c.email == email.strip().lower())
            ).first()
        return None if row is None else _to_subscriber(row)

    def add(self, subscriber: Subscriber, *, now: datetime) -> Subscriber:
        """Insert a new subscriber; returns it with its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                subscribers.insert().values(**_values(subscriber), created_at=now, updated_at=now)
            )
            new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return Subscriber(**{**subscriber.__dict__, "id": new_id})

    def update(self, subscriber: Subscriber, *, now: datetime) -> None:
        """Write every field of an existing subscriber (matched by id)."""
        if subscriber.id is None:
            raise ValueError("update needs a stored subscriber")
        with self.engine.begin() as conn:
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber.id)
                .values(**_values(subscriber), updated_at=now)
            )

    def set_status(self, subscriber_id: int, status: str, *, reason: str, now: datetime) -> bool:
        """Change a subscriber's status; False if there is no such subscriber."""
        with self.engine.begin() as conn:
            result = conn.execute(
                subscribers.update()
                .where(subscribers.c.id == subscriber_id)
                .values(status=status, status_reason=reason, updated_at=now)
            )
        return bool(result.rowcount)

    def iter_all(self, *, status: str | None = None, chunk: int = 1000) -> Iterator[Subscriber]:
        """Every subscriber (optionally of one status), by id, streamed in chunks."""
        last = 0
        while True:
            query = select(subscribers).where(subscribers.c.id > last)
            if status is not None:
                query = query.where(subscribers.c.status == status)
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(subscribers.c.id).limit(chunk)).all()
            if not rows:
                return
            for row in rows:
                yield _to_subscriber(row)
            last = rows[-1].id

    def count(self, *, status: str | None = None) -> int:
        query = select(func.count()).select_from(subscribers)
        if status is not None:
            query = query.where(subscribers.c.status == status)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
