"""A/B tests in the store: the facts results count, and the one decision per edition.

Implements digest.experiments.ledger.ExperimentLedger.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from digest.experiments.ledger import Decision
from digest.experiments.results import COUNTED, DeliveryFact, EventFact
from digest.store.schema import deliveries, events, experiment_decisions

CHUNK = 5000
# Events without our custom args are matched by SendGrid's message id; look at those from
# a day before the edition's first send on.
UNTAGGED_SLACK = timedelta(days=1)

_d, _e, _x = deliveries.c, events.c, experiment_decisions.c


class ExperimentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def delivery_facts(self, edition_key: str) -> Iterator[DeliveryFact]:
        query = select(
            _d.id, _d.variant, _d.state, _d.email, _d.provider_message_id, _d.sent_at
        ).where(_d.edition_key == edition_key)
        for row in self._stream(query, _d.id):
            yield DeliveryFact(*row)

    def event_facts(self, edition_key: str) -> Iterator[EventFact]:
        """Events naming the edition or one of its rows, and untagged events since its send."""
        mine = select(_d.id).where(_d.edition_key == edition_key)
        first = select(func.min(_d.sent_at)).where(_d.edition_key == edition_key)
        with self.engine.connect() as conn:
            start = conn.execute(first).scalar()
        wanted = [_e.edition_key == edition_key, _e.delivery_id.in_(mine)]
        if start is not None:
            wanted.append(
                and_(
                    _e.edition_key.is_(None),
                    _e.delivery_id.is_(None),
                    _e.occurred_at >= start - UNTAGGED_SLACK,
                )
            )
        query = select(_e.id, _e.event, _e.email, _e.delivery_id, _e.edition_key, _e.data).where(
            _e.event.in_(sorted(COUNTED)), or_(*wanted)
        )
        for row in self._stream(query, _e.id):
            data = row.data if isinstance(row.data, dict) else {}
            yield EventFact(
                event=row.event,
                email=row.email,
                delivery_id=row.delivery_id,
                edition_key=row.edition_key,
                message_id=str(data.get("sg_message_id") or ""),
                machine_open=_true(data.get("sg_machine_open")),
            )

    def decision(self, edition_key: str) -> Decision | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(experiment_decisions).where(_x.edition_key == edition_key)
            ).first()
        if row is None:
            return None
        return Decision(
            edition_key=row.edition_key,
            verdict=row.verdict,
            winner=row.winner,
            variant=row.variant,
            decided_by=row.decided_by,
            decided_at=row.decided_at,
            report=dict(row.report),
        )

    def save_decision(self, decision: Decision) -> Decision:
        """Store the edition's decision unless one exists; returns the one that stands."""
        values = {
            "edition_key": decision.edition_key,
            "verdict": decision.verdict,
            "winner": decision.winner,
            "variant": decision.variant,
            "decided_by": decision.decided_by,
            "decided_at": decision.decided_at,
            "report": decision.report,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(experiment_decisions.insert().values(**values))
        except IntegrityError:
            pass  # decided meanwhile by another run: that decision stands
        stored = self.decision(decision.edition_key)
        assert stored is not None
        return stored

    def _stream(self, query: Any, key: Any) -> Iterator[Any]:
        last = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(query.where(key > last).order_by(key).limit(CHUNK)).all()
            yield from rows
            if len(rows) < CHUNK:
                return
            last = rows[-1][0]


def _true(value: object) -> bool:
    return value is True or str(value).lower() in ("true", "1")
