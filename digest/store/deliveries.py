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
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Integer,
    Row,
    Select,
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    column,
    func,
    literal,
    literal_column,
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
# Written out, not bound: only then may a query use the index of pending rows.
_PENDING = _d.state == literal_column("'pending'")

# A batch's row ids travel as one parameter (a JSON array for SQLite's json_each, an
# array on PostgreSQL), so a statement compiles once and binds one value, not 1,000.
_SQLITE_IDS = _d.id.in_(
    select(column("value", Integer)).select_from(func.json_each(bindparam("ids", type_=Text)))
)
_POSTGRES_IDS = _d.id == any_(bindparam("ids", type_=ARRAY(Integer)))
ONE_PARAMETER = 1000  # ids per statement when they travel as one parameter (a whole batch)

# A row to plan: subscriber id, email, name, content key, variant, moment (stored form) or None
Planned = tuple[int, str, str, str, str, str | None]


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
        moment: Callable[[str], datetime] | None = None,
    ) -> int:
        """Add a pending row per active subscriber that `assign(id, topics)` gives a
        (content key, variant); rows that exist already stay as they are. Returns how many
        were added. With `digest` (key, whether it is the project's first digest), only
        subscribers who chose that digest are planned (no choice means the first digest).
        With `moment(zone)`, each row gets the moment of its subscriber's time zone.

        Each chunk is one executemany sorted by content key, so the rows a send batch
        claims together sit side by side in the table: claiming and recording a
        batch then touches a few dozen pages, not one page per row.
        """
        s = subscribers.c
        planned = select(_d.id).where(_d.edition_key == edition_key, _d.subscriber_id == s.id)
        query = (
            # topics as their stored JSON text: subscribers share a few lists, decoded once each
            select(
                s.id,
                s.email,
                func.coalesce(s.name, ""),
                s.timezone,
                cast(s.topics, Text),
                cast(s.digests, Text),
            )
            .where(
                s.id > bindparam("last"),
                s.status == "active",
                ~planned.exists(),  # a re-run only reads whom it has not planned yet
            )
            .order_by(s.id)
            .limit(PLAN_CHUNK)
        )
        decoded: dict[str, tuple[str, ...]] = {}
        moments: dict[str, str | None] = {}  # zone -> its moment, as the row stores it
        stamp = _stamp_of(self.engine.dialect)

        def chunk(conn: Connection, last: int) -> tuple[int, int | None]:
            """Plan one chunk of subscribers in one commit: (rows added, last id read)."""
            rows = conn.execute(query, {"last": last}).all()
            if not rows:
                return 0, None
            planned: list[Planned] = []
            for sid, email, name, zone, text, chosen in rows:
                if digest is not None and not _chose(chosen, *digest):
                    continue
                topics = decoded.get(text)
                if topics is None:
                    if len(decoded) > TOPIC_CACHE:  # keep memory flat on varied lists
                        decoded.clear()
                    topics = decoded[text] = tuple(json.loads(text) or ()) if text else ()
                assigned = assign(sid, topics)
                if assigned is None:
                    continue
                at = moments.get(zone, "")
                if at == "":
                    at = moments[zone] = None if moment is None else stamp(moment(zone))
                planned.append((sid, email, name, *assigned, at))
            planned.sort(key=_by_content)  # a content key's rows side by side, by id
            if not planned:
                return 0, rows[-1][0]
            added = changed(conn, self._insert_planned(edition_key, planned, now), _d.id)
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
            .where(_d.edition_key == edition_key, _PENDING, _d.send_after.is_(None))
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
                        _PENDING,
                        _d.send_after.is_(None),
                        _d.subscriber_id.in_(of_zone),
                    )
                    .values(send_after=moment(zone), updated_at=now)
                )
                stamped += changed(conn, stmt, _d.id)
            return stamped

        return self._write("stamp send moments", work)

    def _insert_planned(self, edition_key: str, planned: list[Planned], now: datetime) -> Any:
        """INSERT … SELECT of the Planned rows, which travel as one parameter (a JSON array
        on SQLite, arrays on PostgreSQL): one statement for a whole chunk, with no per-row
        parameter handling."""
        fields: list[Any]
        if self._postgres:
            sids, emails, names, keys, variants, ats = (list(c) for c in zip(*planned, strict=True))
            source = (
                func.unnest(
                    bindparam("sids", sids, type_=ARRAY(Integer)),
                    bindparam("emails", emails, type_=ARRAY(Text)),
                    bindparam("names", names, type_=ARRAY(Text)),
                    bindparam("keys", keys, type_=ARRAY(Text)),
                    bindparam("variants", variants, type_=ARRAY(Text)),
                    bindparam("ats", ats, type_=ARRAY(Text)),
                )
                .table_valued("sid", "email", "name", "key", "variant", "at")
                .render_derived()
            )
            fields = [source.c[c] for c in ("sid", "email", "name", "key", "variant")]
            fields.append(cast(source.c.at, DateTime()))
        else:
            source = func.json_each(
                bindparam("rows", json.dumps(planned), type_=Text)
            ).table_valued("value", "key")
            fields = [func.json_extract(source.c.value, f"$[{i}]") for i in range(6)]
        sid, email, name, key, variant, at = fields
        rows = select(
            literal(edition_key, String), sid, email, name, variant, key,
            literal("pending", String), literal(0, Integer),
            literal(now, UTCDateTime), literal(now, UTCDateTime), at,
        ).where(sid.is_not(None))  # fmt: skip
        if not self._postgres:
            rows = rows.order_by(source.c.key)
        columns = ["edition_key", "subscriber_id", "email", "name", "variant", "content_key",
                   "state", "attempts", "created_at", "updated_at", "send_after"]  # fmt: skip
        return self._insert_ignore().from_select(columns, rows)

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
            .where(_d.edition_key == edition_key, _PENDING, *_due(due))
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
                _PENDING,
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
    ) -> Sequence[Row[Any]]:
        """Up to `limit` pending rows of one content key with ids above `after` (and a moment
        no later than `due`), read but not claimed (a send composes them while the previous
        batch is in flight)."""
        query = self._rows().where(
            _d.edition_key == edition_key,
            _PENDING,
            _d.content_key == content_key,
            _d.id > after,
            *_due(due),
        )
        with self.engine.connect() as conn:
            return conn.execute(query.order_by(_d.id).limit(limit)).all()

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
                        _PENDING,
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

    def pending_of(self, edition_key: str, ids: Sequence[int]) -> Sequence[Row[Any]]:
        """The rows `ids` of the edition that are still pending, by id (a worker's batch)."""
        found: list[Row[Any]] = []
        for chunk in _chunks(sorted(ids)):
            query = self._rows().where(_d.id.in_(chunk), _d.edition_key == edition_key, _PENDING)
            with self.engine.connect() as conn:
                found.extend(conn.execute(query.order_by(_d.id)))
        return found

    @staticmethod
    def _rows() -> Select[Any]:
        """Rows as composing reads them (compose.Row), with the address and name planned."""
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
                # index of pending rows and scan every pending row of the edition
                mine = and_(self._in_ids, _PENDING)
                taken = set(
                    conn.execute(
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
                        .returning(_d.id),
                        self._ids(chunk),
                    )
                    .scalars()
                    .all()
                )
                claimed |= taken
                rest = [i for i in chunk if i not in taken]
                if rest:  # left, or taken by another send (those stay as they are)
                    gone += len(
                        conn.execute(
                            update(deliveries)
                            .where(mine, ~active)
                            .values(state="suppressed", last_error=GONE, updated_at=now)
                            .returning(_d.id),
                            self._ids(rest),
                        ).all()
                    )
            return claimed, gone

        return self._write("claim a batch", work)

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

        def work(conn: Connection) -> None:
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


def _by_content(row: Planned) -> tuple[str, str]:
    return row[3], row[4]


def _stamp_of(dialect: Any) -> Callable[[datetime], str]:
    """A moment as the store writes it (send_after travels inside a JSON or text array)."""
    process = deliveries.c.send_after.type.bind_processor(dialect)

    def stamp(moment: datetime) -> str:
        value = process(moment) if process is not None else moment
        return value if isinstance(value, str) else value.isoformat(sep=" ")

    return stamp


def _chose(chosen: str | None, digest: str, first: bool) -> bool:
    """Whether a subscriber's stored digest choice (JSON text) includes `digest`."""
    keys = json.loads(chosen) if chosen else None
    return digest in keys if keys else first


def _chunks(ids: list[int], size: int = 900) -> Iterator[list[int]]:
    """Id lists short enough for any database's limit on bound parameters."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
