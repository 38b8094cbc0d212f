"""The delivery ledger: one row per (edition, subscriber), moved claim → send → record.

Implements `send.Ledger`. Every operation is a handful of set-based statements (bulk
INSERT … ON CONFLICT DO NOTHING, UPDATE … WHERE id IN (…), executemany), so the cost per
recipient stays flat and the audience is streamed in chunks, never held in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from digest.errors import DigestError
from digest.store.schema import deliveries, subscribers
from digest.transports.base import SendResult

STATES = ("pending", "sending", "sent", "failed", "suppressed")
PLAN_CHUNK = 5000

_d = deliveries.c


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A claimed delivery: what composing one recipient needs."""

    id: int
    subscriber_id: int
    email: str
    name: str
    variant: str
    content_key: str


class DeliveryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- planning ------------------------------------------------------------
    def plan(
        self,
        edition_key: str,
        assign: Callable[[int, Sequence[str]], tuple[str, str] | None],
        *,
        now: datetime,
    ) -> int:
        """Add a pending row per active subscriber that `assign(id, topics)` gives a
        (content key, variant); rows that exist already stay as they are. Returns how many
        were added."""
        insert = self._insert_ignore()
        last, added = 0, 0
        while True:
            planned = select(_d.id).where(
                _d.edition_key == edition_key, _d.subscriber_id == subscribers.c.id
            )
            query = (
                select(subscribers.c.id, subscribers.c.email, subscribers.c.topics)
                .where(
                    subscribers.c.id > last,
                    subscribers.c.status == "active",
                    ~planned.exists(),  # a re-run only reads whom it has not planned yet
                )
                .order_by(subscribers.c.id)
                .limit(PLAN_CHUNK)
            )
            with self.engine.begin() as conn:
                rows = conn.execute(query).all()
                if not rows:
                    return added
                values = []
                for row in rows:
                    assigned = assign(row.id, row.topics or ())
                    if assigned is not None:
                        key, variant = assigned
                        values.append(
                            {
                                "edition_key": edition_key,
                                "subscriber_id": row.id,
                                "email": row.email,
                                "variant": variant,
                                "content_key": key,
                                "state": "pending",
                                "attempts": 0,
                                "created_at": now,
                                "updated_at": now,
                            }
                        )
                if values:
                    result = conn.execute(insert, values)
                    added += max(result.rowcount, 0)
            last = rows[-1].id

    def _insert_ignore(self) -> Any:
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sqlite.insert(deliveries).on_conflict_do_nothing()
        if dialect == "postgresql":
            return postgresql.insert(deliveries).on_conflict_do_nothing()
        raise DigestError(f"store: the delivery ledger does not support {dialect!r}")

    # -- the send loop -------------------------------------------------------
    def content_keys(self, edition_key: str) -> list[str]:
        """Content keys that still have pending rows, in a stable order."""
        query = (
            select(_d.content_key)
            .where(_d.edition_key == edition_key, _d.state == "pending")
            .group_by(_d.content_key)
            .order_by(func.min(_d.id))
        )
        with self.engine.connect() as conn:
            return [r.content_key for r in conn.execute(query)]

    def suppress_inactive(self, edition_key: str, *, now: datetime) -> int:
        """Pending rows whose subscriber left (or is gone) become suppressed; returns how many."""
        active = select(subscribers.c.id).where(subscribers.c.status == "active")
        stmt = (
            update(deliveries)
            .where(
                _d.edition_key == edition_key,
                _d.state == "pending",
                _d.subscriber_id.not_in(active),
            )
            .values(state="suppressed", last_error="subscriber is no longer active", updated_at=now)
        )
        with self.engine.begin() as conn:
            return max(conn.execute(stmt).rowcount, 0)

    def claim(
        self,
        edition_key: str,
        content_key: str,
        limit: int,
        *,
        batch_id: str | None,
        scheduled_at: datetime | None,
        now: datetime,
    ) -> tuple[list[LedgerRow], int]:
        """Move up to `limit` pending rows to `sending` (committed); returns them and how many
        were suppressed instead because their subscriber is no longer active."""
        s = subscribers.c
        query = (
            select(_d.id, _d.subscriber_id, _d.email, _d.variant, _d.content_key, s.name, s.status)
            .select_from(deliveries.outerjoin(subscribers, s.id == _d.subscriber_id))
            .where(
                _d.edition_key == edition_key,
                _d.state == "pending",
                _d.content_key == content_key,
            )
            .order_by(_d.id)
            .limit(limit)
        )
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            gone = [r.id for r in rows if r.status != "active"]
            claimed = [r for r in rows if r.status == "active"]
            if gone:
                conn.execute(
                    update(deliveries)
                    .where(_d.id.in_(gone), _d.state == "pending")
                    .values(
                        state="suppressed",
                        last_error="subscriber is no longer active",
                        updated_at=now,
                    )
                )
            if claimed:
                ids = [r.id for r in claimed]
                result = conn.execute(
                    update(deliveries)
                    .where(_d.id.in_(ids), _d.state == "pending")
                    .values(
                        state="sending",
                        attempts=_d.attempts + 1,
                        provider_batch_id=batch_id,
                        provider_message_id=None,
                        last_error=None,
                        sent_at=scheduled_at,
                        updated_at=now,
                    )
                )
                if result.rowcount != len(ids):
                    # Another send of this edition claimed some of these rows first: stop
                    # rather than risk sending twice; the transaction rolls back.
                    raise DigestError(
                        f"another send of {edition_key} is running",
                        hint="wait for it to finish, then run the send again to resume",
                    )
        out = [
            LedgerRow(r.id, r.subscriber_id, r.email, r.name or "", r.variant, r.content_key)
            for r in claimed
        ]
        return out, len(gone)

    def record(self, results: Sequence[SendResult], *, retries: int, now: datetime) -> None:
        """Write each final result (sent or failed) of one provider call, in one commit.

        Results are grouped by message id / error (a SendGrid request has one message id for
        all its recipients), so a batch costs a few UPDATE … WHERE id IN (…), not one per row.
        """
        groups: dict[tuple[bool, str | None], list[int]] = {}
        for r in results:
            groups.setdefault((r.ok, r.message_id if r.ok else r.error or "failed"), []).append(
                r.delivery_id
            )
        with self.engine.begin() as conn:
            for (ok, value), ids in groups.items():
                values: dict[str, Any] = {
                    "attempts": _d.attempts + retries,
                    "updated_at": now,
                }
                if ok:
                    # a scheduled send keeps its send time as sent_at
                    values.update(
                        state="sent",
                        provider_message_id=value,
                        sent_at=func.coalesce(_d.sent_at, now),
                    )
                else:
                    values.update(state="failed", last_error=value, sent_at=None)
                for chunk in _chunks(ids):
                    conn.execute(update(deliveries).where(_d.id.in_(chunk)).values(**values))

    # -- after a crash -------------------------------------------------------
    def in_doubt(self, edition_key: str) -> list[tuple[str | None, datetime | None, int]]:
        """Rows left in `sending`, grouped: (provider batch id, scheduled send time, count)."""
        query = (
            select(_d.provider_batch_id, func.min(_d.sent_at).label("at"), func.count().label("n"))
            .where(_d.edition_key == edition_key, _d.state == "sending")
            .group_by(_d.provider_batch_id)
        )
        with self.engine.connect() as conn:
            return [(r.provider_batch_id, r.at, int(r.n)) for r in conn.execute(query)]

    def release(self, edition_key: str, batch_id: str | None, *, now: datetime) -> int:
        """Rows of a cancelled provider batch go back to pending (sent again with a new batch)."""
        return self._move(edition_key, ("sending", "sent"), batch_id, "pending", None, now)

    def fail_in_doubt(
        self, edition_key: str, batch_id: str | None, reason: str, *, now: datetime
    ) -> int:
        """Rows of one batch left in `sending` become failed with `reason`."""
        return self._move(edition_key, ("sending",), batch_id, "failed", reason, now)

    def _move(
        self,
        edition_key: str,
        from_states: Sequence[str],
        batch_id: str | None,
        state: str,
        error: str | None,
        now: datetime,
    ) -> int:
        batch = (
            _d.provider_batch_id.is_(None) if batch_id is None else _d.provider_batch_id == batch_id
        )
        values: dict[str, Any] = {
            "state": state,
            "last_error": error,
            "updated_at": now,
            "sent_at": None,
        }
        if state == "pending":
            values.update(provider_batch_id=None, provider_message_id=None)
        stmt = (
            update(deliveries)
            .where(and_(_d.edition_key == edition_key, _d.state.in_(from_states), batch))
            .values(**values)
        )
        with self.engine.begin() as conn:
            return max(conn.execute(stmt).rowcount, 0)

    def retry_failed(self, edition_key: str, *, now: datetime) -> int:
        """Failed rows go back to pending so this run sends them again."""
        stmt = (
            update(deliveries)
            .where(_d.edition_key == edition_key, _d.state == "failed")
            .values(state="pending", provider_batch_id=None, updated_at=now)
        )
        with self.engine.begin() as conn:
            return max(conn.execute(stmt).rowcount, 0)

    def scheduled(self, edition_key: str, *, now: datetime) -> list[str]:
        """Provider batches of this edition whose send time is still ahead."""
        query = (
            select(_d.provider_batch_id)
            .where(
                _d.edition_key == edition_key,
                _d.state.in_(("sent", "sending")),
                _d.provider_batch_id.is_not(None),
                _d.sent_at > now,
            )
            .group_by(_d.provider_batch_id)
            .order_by(func.min(_d.id))
        )
        with self.engine.connect() as conn:
            return [r.provider_batch_id for r in conn.execute(query)]

    # -- reporting -----------------------------------------------------------
    def counts(self, edition_key: str) -> dict[str, int]:
        """Rows per state (every state present, zero when none)."""
        query = (
            select(_d.state, func.count().label("n"))
            .where(_d.edition_key == edition_key)
            .group_by(_d.state)
        )
        with self.engine.connect() as conn:
            found = {r.state: int(r.n) for r in conn.execute(query)}
        return {state: found.get(state, 0) for state in STATES}

    def failures(self, edition_key: str) -> dict[str, int]:
        """Failed rows counted by their error."""
        query = (
            select(_d.last_error, func.count().label("n"))
            .where(_d.edition_key == edition_key, _d.state == "failed")
            .group_by(_d.last_error)
        )
        with self.engine.connect() as conn:
            return dict(Counter({r.last_error or "failed": int(r.n) for r in conn.execute(query)}))

    def rows(
        self, edition_key: str, *, state: str | None = None, chunk: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every row of the edition (optionally of one state), by id, streamed in chunks."""
        last = 0
        while True:
            query = select(deliveries).where(_d.edition_key == edition_key, _d.id > last)
            if state is not None:
                query = query.where(_d.state == state)
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(_d.id).limit(chunk)).all()
            if not rows:
                return
            for row in rows:
                yield dict(row._mapping)
            last = rows[-1].id


def _chunks(ids: list[int], size: int = 900) -> Iterator[list[int]]:
    """Id lists short enough for any database's limit on bound parameters."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
