"""Planning the ledger: one pending row per subscriber an edition goes to, in set-based
chunks (the audience is streamed, never held in memory)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    DateTime,
    Integer,
    String,
    Text,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from digest.store.ledger import PENDING, LedgerBase, driver_rows
from digest.store.schema import UTCDateTime, audiences, changed, deliveries, subscribers

PLAN_CHUNK = 10_000  # subscribers read per planning transaction
TOPIC_CACHE = 10_000  # distinct topic lists decoded at a time

_d = deliveries.c

# A row to plan: subscriber id, email, name, content key, variant, moment (stored form) or None
Planned = tuple[int, str, str, str, str, str | None]

# SQLite plans a chunk in one executemany of plain tuples, bound by the driver in C
_SQLITE_PLAN = (
    "INSERT INTO deliveries (edition_key, subscriber_id, email, name, content_key, variant, "
    "send_after, created_at, updated_at, state, attempts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?8, ?8, 'pending', 0) ON CONFLICT DO NOTHING"
)


class Planning(LedgerBase):
    """The ledger's planning half (digest.store.deliveries.DeliveryStore is the other)."""

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

        Each chunk is written in one statement, sorted by content key, so the rows a send batch
        claims together sit side by side in the table: claiming and recording a batch
        then touches a few dozen pages, not one page per row.
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
            rows = driver_rows(conn.execute(query, {"last": last}))
            if not rows:
                return 0, None
            planned: list[Planned] = []
            for sid, email, name, zone, listed, chosen in rows:
                if digest is not None and not _chose(chosen, *digest):
                    continue
                topics = decoded.get(listed)
                if topics is None:
                    if len(decoded) > TOPIC_CACHE:  # keep memory flat on varied lists
                        decoded.clear()
                    topics = decoded[listed] = tuple(json.loads(listed) or ()) if listed else ()
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
            if not self._postgres:
                at_now = stamp(now)
                values = [(edition_key, *row, at_now) for row in planned]
                return conn.exec_driver_sql(_SQLITE_PLAN, values).rowcount, rows[-1][0]
            insert = self._insert_planned(edition_key, planned, now)
            # counted from RETURNING: rowcount there is -1 for ON CONFLICT DO NOTHING
            return changed(conn, insert, _d.id), rows[-1][0]

        last: int | None = 0
        total = 0
        while last is not None:
            at = last
            added, last = self._write("plan", lambda conn: chunk(conn, at))  # noqa: B023
            total += added
        if total and self._postgres:
            # Fresh statistics of the ledger (the subscribers did not change): without
            # them PostgreSQL knows neither how many rows the edition has nor that ids
            # follow the pages, and reads a batch's 1,000 rows by scanning the table.
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE deliveries"))
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
            .where(_d.edition_key == edition_key, PENDING, _d.send_after.is_(None))
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
                        PENDING,
                        _d.send_after.is_(None),
                        _d.subscriber_id.in_(of_zone),
                    )
                    .values(send_after=moment(zone), updated_at=now)
                )
                stamped += changed(conn, stmt, _d.id)
            return stamped

        return self._write("stamp send moments", work)

    def _insert_planned(self, edition_key: str, planned: list[Planned], now: datetime) -> Any:
        """PostgreSQL: INSERT … SELECT of the Planned rows, which travel as one parameter, a
        JSON array of arrays (written by orjson in C) that the server takes apart as jsonb:
        one statement for a whole chunk, no per-row parameters. (Six text arrays were
        quoted value by value in Python: a third of planning's time. As json rather than
        jsonb, each ->> parses its element again: four times slower.)"""
        source = (
            func.jsonb_array_elements(
                cast(bindparam("rows", orjson.dumps(planned).decode(), type_=Text), JSONB)
            )
            .table_valued("value", with_ordinality="position")
            .render_derived()
        )
        item = [
            source.c.value.op("->>", return_type=Text)(literal_column(str(i))) for i in range(6)
        ]
        sid, email, name, key, variant, at = item
        rows = select(
            literal(edition_key, String), cast(sid, Integer), email, name, variant, key,
            literal("pending", String), literal(0, Integer),
            literal(now, UTCDateTime), literal(now, UTCDateTime), cast(at, DateTime()),
        ).order_by(source.c.position)  # fmt: skip
        columns = ["edition_key", "subscriber_id", "email", "name", "variant", "content_key",
                   "state", "attempts", "created_at", "updated_at", "send_after"]  # fmt: skip
        return postgresql.insert(deliveries).on_conflict_do_nothing().from_select(columns, rows)

    def audience_topics(self) -> Iterator[tuple[str, ...]]:
        """Each distinct topic list of the active subscribers (what planning will assign)."""
        s = subscribers.c
        query = select(cast(s.topics, Text)).where(s.status == "active").distinct()
        with self.engine.connect() as conn:
            texts = [r[0] for r in conn.execute(query)]
        for listed in texts:
            yield tuple(json.loads(listed) or ()) if listed else ()


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
