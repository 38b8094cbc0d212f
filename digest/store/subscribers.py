"""Subscribers in the store: lookups, upserts, status changes, and a streaming audience."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Column, Connection, Dialect, Engine, Row, Text, bindparam, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from digest.errors import BusyError, DigestError
from digest.store.busy import WAIT_SECONDS, retry_locked, synced
from digest.store.group import GroupCommit
from digest.store.schema import changed, deliveries, subscribers
from digest.subscriber import SUPPRESSED, Subscriber, SubscriberRecord, SubscriberRow

LOOKUP_CHUNK = 500  # addresses per IN (...) query, well under every driver's limit
LOCK_TIMEOUT = "55P03"  # PostgreSQL's lock_not_available: waited past SET lock_timeout


def _to_subscriber(row: Row[Any]) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        name=row.name,
        topics=tuple(row.topics or ()),
        digests=tuple(row.digests or ()),
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
        "digests": list(s.digests) or None,
        "timezone": s.timezone,
        "locale": s.locale,
        "status": s.status,
        "consent_at": s.consent_at,
        "consent_method": s.consent_method,
        "consent_source": s.consent_source,
        "consent_ip": s.consent_ip,
    }


# Built once: the one-click path runs them under load, and building costs more than running.
# One UPDATE for all the ids of a batch that share a reason and a time (a burst's do):
# executemany with one parameter set per id spent 45 µs of CPU a row binding them.
_UNSUBSCRIBE = (
    subscribers.update()
    .where(subscribers.c.id.in_(bindparam("sids", expanding=True)))
    .where(subscribers.c.status.not_in(sorted(SUPPRESSED)))
    .values(status="unsubscribed", status_reason=bindparam("why"), updated_at=bindparam("at"))
)
_EMAILS_OF = select(subscribers.c.id, subscribers.c.email).where(
    subscribers.c.id.in_(bindparam("sids", expanding=True))
)
# One statement with LOOKUP_CHUNK parameters, short lists padded with "" (no address is
# empty): an expanding IN is rendered again for every list, which cost more than the query.
_LOOKUP_KEYS = [f"e{i}" for i in range(LOOKUP_CHUNK)]
_IN_LOOKUP = subscribers.c.email.in_([bindparam(k) for k in _LOOKUP_KEYS])
_KNOWN = select(subscribers.c.email).where(_IN_LOOKUP)
# A Subscriber's columns, its JSON lists as text: a list has few distinct topic lists, each
# decoded once by _keys (decoding every row's was a third of an export's time).
_LISTED = select(
    subscribers.c.id, subscribers.c.email, subscribers.c.name,
    sql_cast(subscribers.c.topics, Text), sql_cast(subscribers.c.digests, Text),
    subscribers.c.timezone, subscribers.c.locale, subscribers.c.status, subscribers.c.consent_at,
    subscribers.c.consent_method, subscribers.c.consent_source, subscribers.c.consent_ip,
)  # fmt: skip
_BY_EMAILS = _LISTED.where(_IN_LOOKUP)
# Executed with many parameter sets: the SET clause is every column each set names.
_UPDATE = subscribers.update().where(subscribers.c.id == bindparam("_id"))
# Every column an import sets, in the table's order (the compiled INSERT's order).
_INSERTED = (*SubscriberRow._fields[:7], "status_reason", *SubscriberRow._fields[7:11],
             "created_at", "updated_at")  # fmt: skip


def _listed(row: Sequence[Any]) -> Subscriber:
    """A Subscriber from a row of _LISTED."""
    sid, email, name, topics, digests, zone, locale, status, at, method, source, ip = row
    return Subscriber(email, name, _keys(topics), _keys(digests), zone, locale, status, sid,
                      at, method, source, ip)  # fmt: skip


@lru_cache(maxsize=4096)
def _keys(text: str | None) -> tuple[str, ...]:
    """Topic or digest keys from their JSON text (SQL NULL, JSON null: none)."""
    return tuple(json.loads(text) or ()) if text else ()


class _Converted(dict[Any, Any]):
    """One column's values as the driver takes them, each distinct value converted once."""

    def __init__(self, column: Column[Any], dialect: Dialect) -> None:
        super().__init__()
        self._convert = column.type.dialect_impl(dialect).bind_processor(dialect)

    def __missing__(self, value: Any) -> Any:
        plain = list(value) if isinstance(value, tuple) else value
        self[value] = converted = self._convert(plain) if self._convert else plain
        return converted


def _insert_many(conn: Connection, rows: Sequence[SubscriberRow], now: datetime) -> None:
    """INSERT `rows` through the driver's executemany, each distinct value converted once.

    SQLAlchemy's executemany converts every parameter of every row in Python (most of an
    import's time); this sends the same statement, with the same conversions (from the
    column types, for this dialect), applied once per distinct topics list or time stamp.
    """
    dialect = conn.dialect
    sql, positional = _driver_sql(dialect, _INSERT, _INSERTED)
    topics_of = _Converted(subscribers.c.topics, dialect)
    digests_of = _Converted(subscribers.c.digests, dialect)
    time_of = _Converted(subscribers.c.consent_at, dialect)
    stamp = time_of[now]
    params: list[Any] = [
        (email, name, topics_of[topics], digests_of[digests or None], zone, locale, status, "",
         time_of[consent_at], method, source, ip, stamp, stamp)
        for email, name, topics, digests, zone, locale, status, consent_at, method, source, ip, _
        in rows
    ]  # fmt: skip
    if not positional:  # named parameters (PostgreSQL's pyformat)
        params = [dict(zip(_INSERTED, p, strict=True)) for p in params]
    conn.exec_driver_sql(sql, params)


_INSERT = subscribers.insert()


@lru_cache(maxsize=16)
def _driver_sql(
    dialect: Dialect, statement: ClauseElement, keys: tuple[str, ...]
) -> tuple[str, bool]:
    """`statement` as this dialect's driver takes it (compiled once, not per chunk), and
    whether its parameters are positional (then in the order of `keys`) or named."""
    compiled = cast(
        SQLCompiler,
        statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=True),
    )
    if compiled.positiontup is not None and list(compiled.positiontup) != list(keys):
        raise RuntimeError(f"unexpected parameter order: {compiled.positiontup}")
    return compiled.string, compiled.positiontup is not None


def _lookup_parts(emails: list[str]) -> Iterator[list[str]]:
    """`emails` LOOKUP_CHUNK at a time, the last part padded with "" (no address is empty)."""
    for i in range(0, len(emails), LOOKUP_CHUNK):
        part = emails[i : i + LOOKUP_CHUNK]
        yield part + [""] * (LOOKUP_CHUNK - len(part))


@contextmanager
def _bounded(conn: Connection, deadline: float) -> Iterator[None]:
    """A transaction that waits for a locked database (SQLite) or row (PostgreSQL) until
    `deadline` at most, and whose commit has reached the disk when it returns (`synced`):
    an unsubscribe is answered as done; group commit makes that one sync for many."""
    left = max(1, int((deadline - time.monotonic()) * 1000))
    if conn.dialect.name != "sqlite":
        with conn.begin():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {left}")
            yield
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    busy = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
    raw.execute(f"PRAGMA busy_timeout={min(left, busy)}")
    try:
        with synced(conn), conn.begin():
            yield
    finally:
        raw.execute(f"PRAGMA busy_timeout={busy}")


class SubscriberStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._unsubscribes: GroupCommit[tuple[int, str, datetime], str | None] = GroupCommit(
            self._unsubscribe_batch, what="unsubscribe"
        )

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

    def unsubscribe(
        self, subscriber_id: int, *, reason: str, now: datetime, wait: float = WAIT_SECONDS
    ) -> str | None:
        """One-click unsubscribe; the subscriber's address, or None if there is no such
        subscriber. A suppressed status (an earlier unsubscribe, a bounce, a complaint) is
        kept with its reason: it says more than a later click.

        Returns once the change is committed (on SQLite, synced to disk); unsubscribes that
        arrive together share one transaction. BusyError, with nothing written, if the
        database stayed locked for `wait` seconds.
        """
        return self._unsubscribes.submit((subscriber_id, reason, now), wait=wait)

    def unsubscribe_many(
        self, items: Sequence[tuple[int, str, datetime]], *, wait: float = WAIT_SECONDS
    ) -> list[str | None]:
        """`unsubscribe` for several (subscriber id, reason, time) at once, in one
        transaction with whatever else is queued; an address or None for each."""
        return self._unsubscribes.submit_many(items, wait=wait)

    def _unsubscribe_batch(
        self, batch: Sequence[tuple[int, str, datetime]], wait: float
    ) -> list[str | None]:
        first: dict[int, tuple[str, datetime]] = {}  # an id asked twice keeps its first reason
        for sid, why, at in batch:
            first.setdefault(sid, (why, at))
        groups: dict[tuple[str, datetime], list[int]] = {}
        for sid, why_at in first.items():
            groups.setdefault(why_at, []).append(sid)
        ids = sorted(first)
        deadline = time.monotonic() + wait

        def write() -> dict[int, str]:
            with self.engine.connect() as conn, _bounded(conn, deadline):
                for (why, at), sids in groups.items():
                    conn.execute(_UNSUBSCRIBE, {"sids": sids, "why": why, "at": at})
                return {r.id: r.email for r in conn.execute(_EMAILS_OF, {"sids": ids})}

        try:
            emails = retry_locked(write, what="unsubscribe", wait=wait)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_TIMEOUT:
                raise
            raise BusyError(
                f"store: unsubscribe: a subscriber's row stayed locked for {wait:g} s",
                hint="another command is writing; nothing was changed",
            ) from None
        return [emails.get(sid) for sid, _, _ in batch]

    def set_status(self, subscriber_id: int, status: str, *, reason: str, now: datetime) -> bool:
        """Change a subscriber's status; False if there is no such subscriber."""
        with self.engine.begin() as conn:
            statement = (
                subscribers.update()
                .where(subscribers.c.id == subscriber_id)
                .values(status=status, status_reason=reason, updated_at=now)
            )
            return changed(conn, statement, subscribers.c.id) == 1

    def iter_all(
        self, *, status: str | None = None, topic: str | None = None, chunk: int = 1000
    ) -> Iterator[Subscriber]:
        """Every subscriber (optionally of one status and topic), by id, streamed in chunks."""
        if topic is not None:
            # topics is a JSON list; filtering here keeps one query for SQLite and PostgreSQL
            yield from (s for s in self.iter_all(status=status, chunk=chunk) if topic in s.topics)
            return
        last = 0
        while True:
            query = _LISTED.where(subscribers.c.id > last)
            if status is not None:
                query = query.where(subscribers.c.status == status)
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(subscribers.c.id).limit(chunk)).all()
            if not rows:
                return
            yield from map(_listed, rows)
            last = rows[-1][0]

    def count(self, *, status: str | None = None) -> int:
        query = select(func.count()).select_from(subscribers)
        if status is not None:
            query = query.where(subscribers.c.status == status)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def get_many_by_email(self, emails: Iterable[str]) -> dict[str, Subscriber]:
        """Known subscribers among `emails` (normalized addresses), keyed by address."""
        found: dict[str, Subscriber] = {}
        with self.engine.connect() as conn:
            # Most addresses of a new list are not stored yet: which are is asked of the
            # driver alone, and only those are read whole, through SQLAlchemy's conversions.
            sql, positional = _driver_sql(conn.dialect, _KNOWN, tuple(_LOOKUP_KEYS))
            known: list[str] = []
            for part in _lookup_parts(list(emails)):
                given = tuple(part) if positional else dict(zip(_LOOKUP_KEYS, part, strict=True))
                known += [email for (email,) in conn.exec_driver_sql(sql, given)]
            for part in _lookup_parts(known):
                for row in conn.execute(_BY_EMAILS, dict(zip(_LOOKUP_KEYS, part, strict=True))):
                    found[row[1]] = _listed(row)
        return found

    def write_import(
        self, adds: Sequence[SubscriberRow], updates: Sequence[Subscriber], *, now: datetime
    ) -> None:
        """Insert `adds` and rewrite `updates` (matched by id) in one short transaction.

        The importer hands over a chunk at a time, so SQLite's single writer is free again
        soon for a send running meanwhile; a locked database is waited for and the chunk
        tried again. Every row was checked before the first chunk was written.
        """

        def write() -> None:
            with self.engine.begin() as conn:
                if adds:
                    _insert_many(conn, adds, now)
                if updates:
                    conn.execute(
                        _UPDATE,
                        [{**_values(s), "updated_at": now, "_id": s.id} for s in updates],
                    )

        try:
            retry_locked(write, what="subscriber import")
        except IntegrityError:
            # Someone signed up with one of these addresses while the import ran.
            raise DigestError(
                "subscribers changed while importing (an address in this chunk was added "
                "meanwhile); the rows reported above were written",
                hint="run the import again: it writes only what is still missing",
            ) from None

    def delete(self, subscriber_id: int) -> bool:
        """Delete a subscriber's row; False if there is none. Delivery rows keep their history."""
        with self.engine.begin() as conn:
            statement = subscribers.delete().where(subscribers.c.id == subscriber_id)
            return changed(conn, statement, subscribers.c.id) == 1

    def record(self, email: str) -> SubscriberRecord | None:
        """The subscriber with this address and its bookkeeping, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(subscribers).where(subscribers.c.email == email.strip().lower())
            ).first()
            if row is None:
                return None
            counts = conn.execute(
                select(deliveries.c.state, func.count().label("n"))
                .where(deliveries.c.subscriber_id == row.id)
                .group_by(deliveries.c.state)
            ).all()
        return SubscriberRecord(
            subscriber=_to_subscriber(row),
            status_reason=row.status_reason or "",
            created_at=row.created_at,
            updated_at=row.updated_at,
            deliveries={r.state: int(r.n) for r in counts},
        )
