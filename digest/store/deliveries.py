"""The delivery ledger: one row per (edition, subscriber), moved claim → send → record.

Implements `send.Ledger`. Every operation is a handful of set-based statements (bulk
INSERT … ON CONFLICT DO NOTHING, UPDATE … WHERE id IN (…), executemany), so the cost per
recipient stays flat and the audience is streamed in chunks, never held in memory.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    column,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from digest.editions import Edition
from digest.errors import DigestError, UsageError
from digest.store.busy import retry_locked
from digest.store.locks import edition_lock
from digest.store.schema import (
    UTCDateTime,
    audiences,
    changed,
    deliveries,
    editions,
    provider_holds,
    subscribers,
)
from digest.transports.base import SendResult

T = TypeVar("T")

STATES = ("pending", "sending", "sent", "failed", "suppressed")
PLAN_CHUNK = 10_000  # subscribers read per planning transaction
TOPIC_CACHE = 10_000  # distinct topic lists decoded at a time
GONE = "subscriber is no longer active"

_d = deliveries.c

# A batch's row ids travel as one parameter (a JSON array for SQLite's json_each, an
# array on PostgreSQL), so a statement compiles once and binds one value, not 1,000.
_SQLITE_IDS = _d.id.in_(
    select(column("value", Integer)).select_from(func.json_each(bindparam("ids", type_=Text)))
)
_POSTGRES_IDS = _d.id == any_(bindparam("ids", type_=ARRAY(Integer)))
ONE_PARAMETER = 1000  # ids per statement when they travel as one parameter (a whole batch)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A pending delivery: what composing one recipient needs."""

    id: int
    subscriber_id: int
    email: str
    name: str
    variant: str
    content_key: str


class DeliveryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._in_ids = _POSTGRES_IDS if self._postgres else _SQLITE_IDS

    def _ids(self, ids: Sequence[int]) -> dict[str, Any]:
        """The parameter `self._in_ids` takes for these row ids."""
        return {"ids": list(ids) if self._postgres else json.dumps(list(ids))}

    # -- planning ------------------------------------------------------------
    def plan(
        self,
        edition_key: str,
        assign: Callable[[int, Sequence[str]], tuple[str, str] | None],
        *,
        now: datetime,
        digest: tuple[str, bool] | None = None,
    ) -> int:
        """Add a pending row per active subscriber that `assign(id, topics)` gives a
        (content key, variant); rows that exist already stay as they are. Returns how many
        were added. With `digest` (key, whether it is the project's first digest), only
        subscribers who chose that digest are planned (no choice means the first digest).

        Each chunk is inserted content key by content key (INSERT … SELECT), so the rows a
        send batch claims together sit side by side in the table: claiming and recording a
        batch then touches a few dozen pages, not one page per row.
        """
        s = subscribers.c
        planned = select(_d.id).where(_d.edition_key == edition_key, _d.subscriber_id == s.id)
        query = (
            # topics as their stored JSON text: subscribers share a few lists, decoded once each
            select(s.id, cast(s.topics, Text), cast(s.digests, Text))
            .where(
                s.id > bindparam("last"),
                s.status == "active",
                ~planned.exists(),  # a re-run only reads whom it has not planned yet
            )
            .order_by(s.id)
            .limit(PLAN_CHUNK)
        )
        decoded: dict[str, tuple[str, ...]] = {}

        def chunk(conn: Connection, last: int) -> tuple[int, int | None]:
            """Plan one chunk of subscribers in one commit: (rows added, last id read)."""
            rows = conn.execute(query, {"last": last}).all()
            if not rows:
                return 0, None
            groups: dict[tuple[str, str], list[int]] = {}
            for sid, text, chosen in rows:
                if digest is not None and not _chose(chosen, *digest):
                    continue
                topics = decoded.get(text)
                if topics is None:
                    if len(decoded) > TOPIC_CACHE:  # keep memory flat on varied lists
                        decoded.clear()
                    topics = decoded[text] = tuple(json.loads(text) or ()) if text else ()
                assigned = assign(sid, topics)
                if assigned is not None:
                    groups.setdefault(assigned, []).append(sid)
            added = 0
            for (key, variant), ids in groups.items():
                for part in _chunks(ids):
                    stmt = self._insert_from(edition_key, key, variant, part, now)
                    # counted from RETURNING: rowcount is -1 for ON CONFLICT on PostgreSQL
                    added += changed(conn, stmt, _d.id)
            return added, rows[-1][0]

        last: int | None = 0
        total = 0
        while last is not None:
            at = last
            added, last = self._write("plan", lambda conn: chunk(conn, at))  # noqa: B023
            total += added
        return total

    def fix_audience(self, edition_key: str, *, now: datetime) -> None:
        """Mark the edition's audience as planned: later sends add nobody (unless asked)."""
        dialect = self.engine.dialect.name
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(audiences)
        stmt = insert.values(edition_key=edition_key, fixed_at=now).on_conflict_do_nothing()
        self._write("fix the audience", lambda conn: conn.execute(stmt))

    def audience_fixed(self, edition_key: str) -> bool:
        query = select(audiences.c.fixed_at).where(audiences.c.edition_key == edition_key)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def stamp_send_after(
        self, edition_key: str, moment: Callable[[str], datetime], *, now: datetime
    ) -> int:
        """Give each pending row with no moment yet the moment `moment(zone)` of its
        subscriber's time zone (local-time delivery); returns how many rows got one."""
        s = subscribers.c
        zones_query = (
            select(s.timezone)
            .join(deliveries, _d.subscriber_id == s.id)
            .where(_d.edition_key == edition_key, _d.state == "pending", _d.send_after.is_(None))
            .distinct()
        )

        def work(conn: Connection) -> int:
            stamped = 0
            for zone in [r.timezone for r in conn.execute(zones_query)]:
                of_zone = select(s.id).where(s.timezone == zone)
                stmt = (
                    update(deliveries)
                    .where(
                        _d.edition_key == edition_key,
                        _d.state == "pending",
                        _d.send_after.is_(None),
                        _d.subscriber_id.in_(of_zone),
                    )
                    .values(send_after=moment(zone), updated_at=now)
                )
                stamped += changed(conn, stmt, _d.id)
            return stamped

        return self._write("stamp send moments", work)

    def _insert_from(
        self, edition_key: str, key: str, variant: str, ids: list[int], now: datetime
    ) -> Any:
        s = subscribers.c
        source = (
            select(
                literal(edition_key, String),
                s.id,
                s.email,
                literal(variant, String),
                literal(key, String),
                literal("pending", String),
                literal(0, Integer),
                literal(now, UTCDateTime),
                literal(now, UTCDateTime),
            )
            .where(s.id.in_(ids), s.status == "active")
            .order_by(s.id)
        )
        columns = ["edition_key", "subscriber_id", "email", "variant", "content_key", "state",
                   "attempts", "created_at", "updated_at"]  # fmt: skip
        return self._insert_ignore().from_select(columns, source)

    def _insert_ignore(self) -> Any:
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return sqlite.insert(deliveries).on_conflict_do_nothing()
        if dialect == "postgresql":
            return postgresql.insert(deliveries).on_conflict_do_nothing()
        raise DigestError(f"store: the delivery ledger does not support {dialect!r}")

    # -- the send loop -------------------------------------------------------
    def content_keys(self, edition_key: str, *, due: datetime | None = None) -> list[str]:
        """Content keys that still have pending rows (due by `due`), in a stable order."""
        query = (
            select(_d.content_key)
            .where(_d.edition_key == edition_key, _d.state == "pending", *_due(due))
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
    ) -> list[LedgerRow]:
        """Up to `limit` pending rows of one content key with ids above `after` (and a moment
        no later than `due`), read but not claimed (a send composes them while the previous
        batch is in flight)."""
        s = subscribers.c
        query = (
            select(
                _d.id,
                _d.subscriber_id,
                _d.email,
                func.coalesce(s.name, ""),
                _d.variant,
                _d.content_key,
            )
            .select_from(deliveries.outerjoin(subscribers, s.id == _d.subscriber_id))
            .where(
                _d.edition_key == edition_key,
                _d.state == "pending",
                _d.content_key == content_key,
                _d.id > after,
                *_due(due),
            )
            .order_by(_d.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [LedgerRow(*r) for r in conn.execute(query).all()]

    def batches(
        self, edition_key: str, size: int, *, due: datetime | None = None
    ) -> Iterator[tuple[str, list[int]]]:
        """The pending rows (due by `due`) as (content key, up to `size` ids), ids only:
        what a worker's batch task carries (digest.workers)."""
        for content_key in self.content_keys(edition_key, due=due):
            after = 0
            while True:
                query = (
                    select(_d.id)
                    .where(
                        _d.edition_key == edition_key,
                        _d.state == "pending",
                        _d.content_key == content_key,
                        _d.id > after,
                        *_due(due),
                    )
                    .order_by(_d.id)
                    .limit(size)
                )
                with self.engine.connect() as conn:
                    ids = list(conn.execute(query).scalars())
                if ids:
                    yield content_key, ids
                if len(ids) < size:
                    break
                after = ids[-1]

    def pending_of(self, edition_key: str, ids: Sequence[int]) -> list[LedgerRow]:
        """The rows `ids` of the edition that are still pending, by id (a worker's batch)."""
        s = subscribers.c
        found: list[LedgerRow] = []
        for chunk in _chunks(sorted(ids)):
            query = (
                select(
                    _d.id,
                    _d.subscriber_id,
                    _d.email,
                    func.coalesce(s.name, ""),
                    _d.variant,
                    _d.content_key,
                )  # fmt: skip
                .select_from(deliveries.outerjoin(subscribers, s.id == _d.subscriber_id))
                .where(_d.id.in_(chunk), _d.edition_key == edition_key, _d.state == "pending")
                .order_by(_d.id)
            )
            with self.engine.connect() as conn:
                found.extend(LedgerRow(*r) for r in conn.execute(query))
        return found

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
        active = (
            select(subscribers.c.id)
            .where(subscribers.c.id == _d.subscriber_id, subscribers.c.status == "active")
            .exists()
        )

        def work(conn: Connection) -> tuple[set[int], int]:
            claimed: set[int] = set()
            gone = 0
            for chunk in _chunks(list(ids), ONE_PARAMETER):
                # by primary key only: naming the edition too would let SQLite pick the
                # (edition, state) index and scan every pending row of the edition
                mine = and_(self._in_ids, _d.state == "pending")
                gone += len(
                    conn.execute(
                        update(deliveries)
                        .where(mine, ~active)
                        .values(state="suppressed", last_error=GONE, updated_at=now)
                        .returning(_d.id),
                        self._ids(chunk),
                    ).all()
                )
                # Rows no longer pending (another send took them) are simply not sent here.
                claimed.update(
                    conn.execute(
                        update(deliveries)
                        .where(mine)
                        .values(
                            state="sending",
                            attempts=_d.attempts + 1,
                            provider_batch_id=batch_id,
                            provider_message_id=None,
                            last_error=None,
                            sent_at=scheduled_at,
                            updated_at=now,
                        )
                        .returning(_d.id),
                        self._ids(chunk),
                    )
                    .scalars()
                    .all()
                )
            return claimed, gone

        return self._write("claim a batch", work)

    def record(self, results: Sequence[SendResult], *, retries: int, now: datetime) -> None:
        """Write each final result (sent or failed) of one provider call, in one commit.

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

        def work(conn: Connection) -> None:
            if len(own) > 1:
                stmt = (
                    update(deliveries)
                    .where(_d.id == bindparam("row"))
                    .values(
                        state="sent",
                        provider_message_id=bindparam("mid"),
                        sent_at=func.coalesce(_d.sent_at, now),
                        updated_at=now,
                        **({"attempts": _d.attempts + retries} if retries else {}),
                    )
                )
                conn.execute(stmt, own)
            for (ok, value), ids in groups.items():
                values: dict[str, Any] = {"updated_at": now}
                if retries:
                    values["attempts"] = _d.attempts + retries
                if ok:
                    # a scheduled send keeps its send time as sent_at
                    values.update(
                        state="sent",
                        provider_message_id=value,
                        sent_at=func.coalesce(_d.sent_at, now),
                    )
                else:
                    values.update(state="failed", last_error=value, sent_at=None)
                for chunk in _chunks(ids, ONE_PARAMETER):
                    stmt = update(deliveries).where(self._in_ids).values(**values)
                    conn.execute(stmt, self._ids(chunk))

        self._write("record results", work)

    def release_ids(self, ids: Sequence[int], *, now: datetime) -> int:
        """Rows of a call that provably delivered nothing go from `sending` back to pending,
        to be claimed again (and checked against unsubscribes again) before the next try."""

        def work(conn: Connection) -> int:
            moved = 0
            for chunk in _chunks(list(ids), ONE_PARAMETER):
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

    def audience_topics(self) -> Iterator[tuple[str, ...]]:
        """Each distinct topic list of the active subscribers (what planning will assign)."""
        s = subscribers.c
        query = select(cast(s.topics, Text)).where(s.status == "active").distinct()
        with self.engine.connect() as conn:
            texts = [r[0] for r in conn.execute(query)]
        for text in texts:
            yield tuple(json.loads(text) or ()) if text else ()

    def _write(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction, starting it again while the database is locked."""

        def attempt() -> T:
            with self.engine.begin() as conn:
                return work(conn)

        return retry_locked(attempt, what=what)

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
        return self._write("settle rows", lambda conn: changed(conn, stmt, _d.id))

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


def _due(due: datetime | None) -> tuple[Any, ...]:
    """Rows with no moment of their own, or one no later than `due` (no condition if None)."""
    if due is None:
        return ()
    return (or_(_d.send_after.is_(None), _d.send_after <= due),)


def _chose(chosen: str | None, digest: str, first: bool) -> bool:
    """Whether a subscriber's stored digest choice (JSON text) includes `digest`."""
    keys = json.loads(chosen) if chosen else None
    return digest in keys if keys else first


def _chunks(ids: list[int], size: int = 900) -> Iterator[list[int]]:
    """Id lists short enough for any database's limit on bound parameters."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
