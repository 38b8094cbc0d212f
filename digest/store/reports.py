"""What the ledger says of an edition: rows per state, failures by reason, the rows
themselves (`digest deliveries`, a send's summary, reports)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select

from digest.store.ledger import STATES, LedgerBase
from digest.store.schema import deliveries

_d = deliveries.c


class Reports(LedgerBase):
    """The ledger's reading half for reports (digest.store.deliveries.DeliveryStore)."""

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

    def total(self, edition_key: str) -> int:
        """The edition's rows in every state (read from the index of (edition, subscriber))."""
        query = select(func.count()).where(_d.edition_key == edition_key)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

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
