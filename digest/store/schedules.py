"""Edition states and their log, the steps scheduled sends have taken, and local-time rows.

Implements `lifecycle.StateStore` and what `runner` needs. Every check-and-write is one
statement or one transaction, so two copies of `digest run-due` can never both take a step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from digest.store.busy import retry_locked
from digest.store.schema import (
    changed,
    deliveries,
    edition_log,
    editions,
    schedule_marks,
    schedule_runs,
)

T = TypeVar("T")
_d = deliveries.c
_r = schedule_runs.c


@dataclass(frozen=True)
class LogEntry:
    edition_key: str
    state: str
    note: str
    at: datetime


@dataclass(frozen=True)
class StepRecord:
    digest: str
    due_at: datetime
    step: str
    outcome: str
    edition_key: str
    note: str
    at: datetime


class ScheduleStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- edition states ------------------------------------------------------
    def state(self, edition_key: str) -> str | None:
        query = select(editions.c.status).where(editions.c.key == edition_key)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def move(
        self, edition_key: str, to: str, *, allowed_from: frozenset[str], note: str, now: datetime
    ) -> bool:
        """Set the edition's state to `to` if it is one of `allowed_from`, and log it."""

        def work(conn: Connection) -> bool:
            values: dict[str, Any] = {"status": to}
            if to == "approved":
                values["approved_at"] = now
            moved = changed(
                conn,
                update(editions)
                .where(editions.c.key == edition_key, editions.c.status.in_(sorted(allowed_from)))
                .values(**values),
                editions.c.key,
            )
            if not moved:
                return False
            data = conn.execute(
                select(editions.c.data).where(editions.c.key == edition_key)
            ).scalar_one()
            conn.execute(
                update(editions)
                .where(editions.c.key == edition_key)
                .values(data={**data, "status": to})
            )
            conn.execute(
                edition_log.insert().values(edition_key=edition_key, state=to, note=note, at=now)
            )
            return True

        return self._write("change an edition's state", work)

    def log(self, edition_key: str) -> list[LogEntry]:
        """The edition's changes of state, oldest first."""
        e = edition_log.c
        query = select(e.edition_key, e.state, e.note, e.at).where(e.edition_key == edition_key)
        with self.engine.connect() as conn:
            return [LogEntry(*r) for r in conn.execute(query.order_by(e.id))]

    def keys_in(self, states: Sequence[str]) -> list[str]:
        """Keys of the editions in one of `states`, in key order."""
        query = select(editions.c.key).where(editions.c.status.in_(list(states)))
        with self.engine.connect() as conn:
            return [r.key for r in conn.execute(query.order_by(editions.c.key))]

    # -- steps of scheduled sends --------------------------------------------
    def record_step(
        self,
        digest: str,
        due_at: datetime,
        step: str,
        outcome: str,
        *,
        edition_key: str,
        note: str = "",
        now: datetime,
    ) -> bool:
        """Record that `step` of the send due at `due_at` happened (or was missed); False
        when it was recorded before (by this run or another), so nothing happens twice."""
        row = {"digest": digest, "due_at": due_at, "step": step, "outcome": outcome,
               "edition_key": edition_key, "note": note, "at": now}  # fmt: skip
        dialect = self.engine.dialect.name
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(schedule_runs)
        stmt = insert.values(**row).on_conflict_do_nothing().returning(_r.step)
        return self._write("record a scheduled step", lambda c: c.execute(stmt).first() is not None)

    def steps(self, digest: str, after: datetime) -> dict[datetime, dict[str, str]]:
        """The recorded steps of the digest's sends due after `after`: due -> step -> outcome."""
        query = select(_r.due_at, _r.step, _r.outcome).where(_r.digest == digest, _r.due_at > after)
        out: dict[datetime, dict[str, str]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                out.setdefault(r.due_at, {})[r.step] = r.outcome
        return out

    def due_of(self, edition_key: str) -> datetime | None:
        """The cron time of the scheduled send that started sending this edition, if any."""
        query = select(func.min(_r.due_at)).where(
            _r.edition_key == edition_key, _r.step == "send", _r.outcome == "done"
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def history(self, digest: str | None = None, limit: int = 50) -> list[StepRecord]:
        """The latest recorded steps, newest first."""
        query = select(schedule_runs).order_by(_r.at.desc(), _r.due_at.desc()).limit(limit)
        if digest is not None:
            query = query.where(_r.digest == digest)
        with self.engine.connect() as conn:
            return [
                StepRecord(r.digest, r.due_at, r.step, r.outcome, r.edition_key, r.note, r.at)
                for r in conn.execute(query)
            ]

    def checked_to(self, digest: str) -> datetime | None:
        m = schedule_marks.c
        with self.engine.connect() as conn:
            return conn.execute(select(m.checked_to).where(m.digest == digest)).scalar()

    def set_checked_to(self, digest: str, at: datetime) -> None:
        """Move the digest's mark forward to `at` (never back)."""
        m = schedule_marks.c

        def work(conn: Connection) -> None:
            known = conn.execute(select(m.checked_to).where(m.digest == digest)).scalar()
            if known is None:
                conn.execute(schedule_marks.insert().values(digest=digest, checked_to=at))
            elif at > known:
                conn.execute(update(schedule_marks).where(m.digest == digest).values(checked_to=at))

        self._write("move the schedule mark", work)

    # -- local-time rows -----------------------------------------------------
    def moments(self, edition_key: str) -> list[datetime | None]:
        """Distinct send moments of the edition's rows still to send, soonest first;
        None (rows with no moment of their own) comes first."""
        query = (
            select(_d.send_after)
            .where(_d.edition_key == edition_key, _d.state.in_(("pending", "sending")))
            .group_by(_d.send_after)
        )
        with self.engine.connect() as conn:
            found = [r.send_after for r in conn.execute(query)]
        return sorted(found, key=lambda m: (m is not None, m))

    def fail_late(self, edition_key: str, before: datetime, reason: str, *, now: datetime) -> int:
        """Pending rows whose moment is earlier than `before` become failed with `reason`."""
        stmt = (
            update(deliveries)
            .where(
                _d.edition_key == edition_key,
                _d.state == "pending",
                _d.send_after < before,
            )
            .values(state="failed", last_error=reason, updated_at=now)
        )
        return self._write("fail late rows", lambda conn: changed(conn, stmt, _d.id))

    def unsent(self, edition_key: str) -> int:
        """Rows still pending or sending."""
        query = (
            select(func.count())
            .select_from(deliveries)
            .where(_d.edition_key == edition_key, _d.state.in_(("pending", "sending")))
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _write(self, what: str, work: Callable[[Connection], T]) -> T:
        def attempt() -> T:
            with self.engine.begin() as conn:
                return work(conn)

        return retry_locked(attempt, what=what)
