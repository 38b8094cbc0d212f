"""Consent records: each signup is kept, and a confirmation never erases the one it replaces."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from digest.store.schema import consents, subscribers
from digest.store.subscribers import _to_subscriber
from digest.subscriber import ConsentRecord, Subscriber


def _record(row: Any) -> ConsentRecord:
    return ConsentRecord(
        id=row.id,
        subscriber_id=row.subscriber_id,
        email=row.email,
        name=row.name,
        topics=tuple(row.topics or ()),
        method=row.method,
        source=row.source,
        ip=row.ip,
        given_at=row.given_at,
        confirmed_at=row.confirmed_at,
    )


class ConsentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
    ) -> int:
        """Record a web signup awaiting its confirmation; returns its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                consents.insert().values(
                    subscriber_id=subscriber_id,
                    email=email,
                    name=name,
                    topics=list(topics),
                    method="double-opt-in",
                    source=source,
                    ip=ip,
                    given_at=now,
                    confirmed_at=None,
                    created_at=now,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def get(self, consent_id: int) -> ConsentRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(consents).where(consents.c.id == consent_id)).first()
        return None if row is None else _record(row)

    def history(self, subscriber_id: int) -> list[ConsentRecord]:
        """Every consent record of a subscriber, oldest first."""
        query = select(consents).where(consents.c.subscriber_id == subscriber_id)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query.order_by(consents.c.id))]

    def confirm(self, consent_id: int, *, now: datetime) -> Subscriber | None:
        """Make a pending signup the subscriber's consent and status `active`, in one
        transaction; the record it replaces is kept in the history. None if the signup is
        unknown or already confirmed."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(consents).where(
                    consents.c.id == consent_id, consents.c.confirmed_at.is_(None)
                )
            ).first()
            if row is None:
                return None
            signup = _record(row)
            current = conn.execute(
                select(subscribers).where(subscribers.c.id == signup.subscriber_id)
            ).first()
            if current is None:
                return None
            _keep(conn, current, now)
            conn.execute(
                consents.update().where(consents.c.id == consent_id).values(confirmed_at=now)
            )
            conn.execute(
                subscribers.update()
                .where(subscribers.c.id == signup.subscriber_id)
                .values(
                    status="active",
                    status_reason="confirmed",
                    name=signup.name or current.name,
                    topics=list(signup.topics),
                    consent_at=signup.given_at,
                    consent_method=signup.method,
                    consent_source=signup.source,
                    consent_ip=signup.ip,
                    updated_at=now,
                )
            )
            updated = conn.execute(
                select(subscribers).where(subscribers.c.id == signup.subscriber_id)
            ).first()
        return None if updated is None else _to_subscriber(updated)


def _keep(conn: Connection, row: Any, now: datetime) -> None:
    """Log the subscriber's current consent (an import's, say) unless the log has it already."""
    if row.consent_at is None:
        return
    known = conn.execute(
        select(consents.c.id).where(
            consents.c.subscriber_id == row.id,
            consents.c.given_at == row.consent_at,
            consents.c.method == row.consent_method,
        )
    ).first()
    if known is not None:
        return
    conn.execute(
        consents.insert().values(
            subscriber_id=row.id,
            email=row.email,
            name=row.name,
            topics=list(row.topics or ()),
            method=row.consent_method,
            source=row.consent_source,
            ip=row.consent_ip,
            given_at=row.consent_at,
            confirmed_at=row.consent_at if row.status != "pending" else None,
            created_at=now,
        )
    )
