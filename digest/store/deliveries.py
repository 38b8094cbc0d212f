"""The delivery ledger: one row per (edition, subscriber), moved claim → send → record.

Implements `digest.ledger.Ledger`, with digest.store.planning and digest.store.reports.
Every operation is a handful of set-based statements (UPDATE … WHERE id IN (…) with the
ids as one parameter, executemany), so the cost per recipient stays flat and rows are read
in batches, never held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, func, or_, select, update

from digest.compose import Row
from digest.editions import Edition
from digest.errors import UsageError
from digest.store.editions import note_sent, recount_first_sent
from digest.store.ledger import PENDING, chunks, driver_rows
from digest.store.locks import edition_lock
from digest.store.planning import Planning
from digest.store.reports import Reports
from digest.store.schema import changed, deliveries, editions, provider_holds, subscribers
from digest.transports.base import SendResult

GONE = "subscriber is no longer active"

_d = deliveries.c


class DeliveryStore(Planning, Reports):
    """Implements `digest.ledger.Ledger` (with digest.store.planning and .reports)."""

    def content_keys(self, edition_key: str, *, due: datetime | None = None) -> list[str]:
        """Content keys that still have pending rows (due by `due`), in a stable order."""
        query = (
            select(_d.content_key)
            .where(_d.edition_key == edition_key, PENDING, *_due(due))
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
                PENDING,
                _d.subscriber_id.not_in(active),
            )
            .values(state="suppressed", last_error=GONE, updated_at=now)
        )
        return self._write(
            "suppress rows of inactive subscribers", lambda conn: changed(conn, stmt, _d.id)
        )

    def pending(
        self,
        edition_key: str,
        content_key: str,
        limit: int,
        *,
        after: int = 0,
        due: datetime | None = None,
    ) -> list[Row]:
        """Up to `limit` pending rows of one content key with ids above `after` (and a moment
        no later than `due`), read but not claimed (a send composes them while the previous
        batch is in flight)."""
        query = self._rows().where(
            _d.edition_key == edition_key,
            PENDING,
            _d.content_key == content_key,
            _d.id > after,
            *_due(due),
        )
        with self.engine.connect() as conn:
            rows = driver_rows(conn.execute(query.order_by(_d.id).limit(limit)))
        return list(map(Row._make, rows))

    def batches(
        self, edition_key: str, size: int, *, due: datetime | None = None
    ) -> Iterator[tuple[str, list[int]]]:
        """The pending rows (due by `due`) as (content key, up to `size` ids), ids only:
        what a worker's batch task carries (digest.workers)."""
        for content_key in self.content_keys(edition_key, due=due):
            query = (
                select(_d.id)
                .where(
                    _d.edition_key == edition_key,
                    PENDING,
                    _d.content_key == content_key,
                    *_due(due),
                )
                .order_by(_d.id)
            )
            with self.engine.connect() as conn:  # one read per content key, split here
                ids = [row[0] for row in driver_rows(conn.execute(query))]
            for start in range(0, len(ids), size):
                yield content_key, ids[start : start + size]

    def pending_of(self, edition_key: str, ids: Sequence[int]) -> list[Row]:
        """The rows `ids` of the edition that are still pending, by id (a worker's batch)."""
        found: list[Row] = []
        # By primary key only, the edition checked here: naming it in the query lets the
        # planner scan every row of the edition whenever its statistics are stale.
        query = self._rows().add_columns(_d.edition_key).where(self._in_ids, PENDING)
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(ids)):
                rows = driver_rows(conn.execute(query.order_by(_d.id), self._ids(chunk)))
                found += (Row._make(r[:-1]) for r in rows if r[-1] == edition_key)
        return found

    @staticmethod
    def _rows() -> Select[Any]:
        """Rows as composing reads them (digest.compose.Row), with the address and name planned."""
        return select(_d.id, _d.subscriber_id, _d.email, _d.name, _d.variant, _d.content_key)

    def claim(
        self,
        edition_key: str,
        ids: Sequence[int],
        *,
        batch_id: str | None,
        scheduled_at: datetime | None,
        now: datetime,
    ) -> tuple[set[int], int]:
        """Move the rows `ids` that are still pending to `sending`, in one commit, right
        before their provider call; returns the ids claimed and how many were suppressed
        instead because their subscriber is no longer active (checked here, so an
        unsubscribe that came while the batch was composed is honoured)."""
        # The subscriber's status, looked up by primary key for each row claimed: as a
        # join, PostgreSQL's planner reads every subscriber into a hash for a batch of
        # 1,000 rows below an audience of about 300,000 (a cost that grows with the list).
        status = (
            select(subscribers.c.status)
            .where(subscribers.c.id == _d.subscriber_id)
            .scalar_subquery()
        )
        active = func.coalesce(status, "") == "active"  # a subscriber gone is not active
        # by primary key only: naming the edition too would let SQLite pick the index in
        # send order and scan every row of the edition
        mine = and_(self._in_ids, PENDING)
        take = (
            update(deliveries)
            .where(mine, active)
            .values(
                state="sending",
                attempts=_d.attempts + 1,
                provider_batch_id=batch_id,
                provider_message_id=None,
                last_error=None,
                sent_at=scheduled_at,
                updated_at=now,
            )
            .returning(_d.id)
        )
        suppress = (
            update(deliveries)
            .where(mine, ~active)
            .values(state="suppressed", last_error=GONE, updated_at=now)
            .returning(_d.id)
        )

        def work(conn: Connection) -> tuple[set[int], int]:
            claimed: set[int] = set()
            gone = 0
            for chunk in chunks(list(ids)):
                taken = {row[0] for row in driver_rows(conn.execute(take, self._ids(chunk)))}
                claimed |= taken
                rest = [i for i in chunk if i not in taken]
                if rest:  # left, or taken by another send (those stay as they are)
                    gone += len(driver_rows(conn.execute(suppress, self._ids(rest))))
            return claimed, gone

        # durable: a claim lost to a power cut would send its rows again
        return self._write("claim a batch", work, durable=True)

    def record(
        self,
        results: Sequence[SendResult],
        *,
        batch_id: str | None,
        now: datetime,
    ) -> None:
        """Write each final result (sent or failed) of one provider call, in one commit.

        Only onto the rows the call still holds (in `sending`, under its provider batch
        `batch_id`, or none): a row withdrawn meanwhile, by a run that took the edition's
        lock when this run lost its lock connection, keeps what that run wrote.

        Results are grouped by message id / error (a SendGrid request has one message id for
        all its recipients), so a batch costs a few UPDATE … WHERE id IN (…), not one per row;
        the rows sent with a message id of their own (SMTP) go in one executemany.
        """
        groups: dict[tuple[bool, str | None], list[int]] = {}
        for r in results:
            groups.setdefault((r.ok, r.message_id if r.ok else r.error or "failed"), []).append(
                r.delivery_id
            )
        own = [
            {"row": ids[0], "mid": value}
            for (ok, value), ids in groups.items()
            if ok and len(ids) == 1
        ]
        if len(own) > 1:
            groups = {k: v for k, v in groups.items() if not (k[0] and len(v) == 1)}
        sent = next((r.delivery_id for r in results if r.ok), None)
        held = and_(_d.state == "sending", _batch_is(batch_id))

        def work(conn: Connection) -> None:
            if len(own) > 1:
                stmt = (
                    update(deliveries)
                    .where(_d.id == bindparam("row"), held)
                    .values(
                        state="sent",
                        provider_message_id=bindparam("mid"),
                        sent_at=func.coalesce(_d.sent_at, now),
                        updated_at=now,
                    )
                )
                conn.execute(stmt, own)
            for (ok, value), ids in groups.items():
                values: dict[str, Any] = {"updated_at": now}
                if ok:
                    # a scheduled send keeps its send time as sent_at
                    values.update(
                        state="sent",
                        provider_message_id=value,
                        sent_at=func.coalesce(_d.sent_at, now),
                    )
                else:
                    values.update(state="failed", last_error=value, sent_at=None)
                for chunk in chunks(ids):
                    stmt = update(deliveries).where(self._in_ids, held).values(**values)
                    conn.execute(stmt, self._ids(chunk))
            if sent is not None:
                note_sent(conn, sent)

        self._write("record results", work)

    def release_ids(self, ids: Sequence[int], *, now: datetime) -> int:
        """Rows of a call that provably delivered nothing go from `sending` back to pending,
        to be claimed again (and checked against unsubscribes again) before the next try."""

        def work(conn: Connection) -> int:
            moved = 0
            for chunk in chunks(list(ids)):
                stmt = (
                    update(deliveries)
                    .where(self._in_ids, _d.state == "sending")
                    .values(state="pending", provider_batch_id=None, sent_at=None, updated_at=now)
                    .returning(_d.id)
                )
                moved += len(conn.execute(stmt, self._ids(chunk)).all())
            return moved

        return self._write("release a batch", work)

    # -- provider holds (SendGrid: at most 10 cancelled batches at a time) ----------
    def add_hold(self, batch_id: str, edition_key: str, *, until: datetime, now: datetime) -> None:
        """Remember a cancelled provider batch until its send time passes."""
        h = provider_holds.c

        def work(conn: Connection) -> None:
            conn.execute(provider_holds.delete().where(h.batch_id == batch_id))
            conn.execute(
                provider_holds.insert().values(
                    batch_id=batch_id, edition_key=edition_key, until=until, created_at=now
                )
            )

        self._write("remember a cancelled batch", work)

    def holds(self, *, now: datetime) -> list[datetime]:
        """Send times of the cancelled batches that still hold a cancel, soonest first."""
        h = provider_holds.c
        query = select(h.until).where(h.until > now).order_by(h.until)
        with self.engine.connect() as conn:
            return [r.until for r in conn.execute(query)]

    # -- guarding a run ------------------------------------------------------
    @contextmanager
    def holding(self, edition: Edition) -> Iterator[None]:
        """Hold the edition's lock for a send, after checking the store still has `edition`
        as it was read: a send renders exactly the frozen edition it locked."""
        with edition_lock(self.engine, edition.key):
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(editions.c.data).where(editions.c.key == edition.key)
                ).first()
            if row is None or not Edition.from_dict(row.data).same_content(edition):
                raise UsageError(
                    f"edition {edition.key} changed or was removed since this send read it",
                    hint="run the send again: it reads the edition as it is now",
                )
            yield

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
        """Rows of a cancelled provider batch go back to pending (sent again with a new batch);
        the edition's first sent time is then that of the rows still sent, if any."""
        move = self._move(edition_key, ("sending", "sent"), batch_id, "pending", None, now)

        def work(conn: Connection) -> int:
            moved = changed(conn, move, _d.id)
            recount_first_sent(conn, edition_key)
            return moved

        return self._write("withdraw a batch", work)

    def fail_in_doubt(
        self, edition_key: str, batch_id: str | None, reason: str, *, now: datetime
    ) -> int:
        """Rows of one batch left in `sending` become failed with `reason`."""
        stmt = self._move(edition_key, ("sending",), batch_id, "failed", reason, now)
        return self._write("settle rows", lambda conn: changed(conn, stmt, _d.id))

    def _move(
        self,
        edition_key: str,
        from_states: Sequence[str],
        batch_id: str | None,
        state: str,
        error: str | None,
        now: datetime,
    ) -> Any:
        """The UPDATE moving one provider batch's rows in `from_states` to `state`."""
        batch = _batch_is(batch_id)
        values: dict[str, Any] = {
            "state": state,
            "last_error": error,
            "updated_at": now,
            "sent_at": None,
        }
        if state == "pending":
            values.update(provider_batch_id=None, provider_message_id=None)
        return (
            update(deliveries)
            .where(and_(_d.edition_key == edition_key, _d.state.in_(from_states), batch))
            .values(**values)
        )

    def retry_failed(self, edition_key: str, *, now: datetime) -> int:
        """Failed rows go back to pending so this run sends them again."""
        stmt = (
            update(deliveries)
            .where(_d.edition_key == edition_key, _d.state == "failed")
            .values(state="pending", provider_batch_id=None, updated_at=now)
        )
        return self._write("retry failed rows", lambda conn: changed(conn, stmt, _d.id))

    def scheduled(self, edition_key: str, *, now: datetime) -> list[tuple[str, datetime]]:
        """Provider batches of this edition whose send time is still ahead, with that time."""
        query = (
            select(_d.provider_batch_id, func.min(_d.sent_at).label("at"))
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
            return [(r.provider_batch_id, r.at) for r in conn.execute(query)]


def _batch_is(batch_id: str | None) -> Any:
    """Rows of the provider batch `batch_id`, or of none when it is None."""
    return _d.provider_batch_id.is_(None) if batch_id is None else _d.provider_batch_id == batch_id


def _due(due: datetime | None) -> tuple[Any, ...]:
    """Rows with no moment of their own, or one no later than `due` (no condition if None)."""
    if due is None:
        return ()
    return (or_(_d.send_after.is_(None), _d.send_after <= due),)
