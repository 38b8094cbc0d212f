"""The store: SQLAlchemy Core over a SQLite file by default, PostgreSQL by URL.

Each concern has its own small repository class; `Store` just holds them together so
one object can be passed around. Stages that only need a few operations declare them
as a Protocol (see `send.Ledger`) instead of importing this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, OperationalError

from digest.errors import DigestError
from digest.store.articles import ArticleStore
from digest.store.deliveries import DeliveryStore
from digest.store.editions import EditionStore
from digest.store.events import EventStore
from digest.store.schedules import ScheduleStore
from digest.store.schema import metadata
from digest.store.subscribers import SubscriberStore


@dataclass
class Store:
    engine: Engine
    articles: ArticleStore
    editions: EditionStore
    subscribers: SubscriberStore
    deliveries: DeliveryStore
    events: EventStore
    schedules: ScheduleStore

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets a reader (the web side) work while a send writes; busy_timeout rides out
    # short lock waits instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (and by default create the tables of) the store at `url`."""
    try:
        engine = create_engine(url, future=True)
    except (ArgumentError, ImportError) as exc:
        raise DigestError(f"store: cannot open {url!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if create:
        try:
            metadata.create_all(engine)
        except OperationalError as exc:
            raise DigestError(f"store: cannot open {url!r}: {exc.orig}") from None
    return Store(
        engine=engine,
        articles=ArticleStore(engine),
        editions=EditionStore(engine),
        subscribers=SubscriberStore(engine),
        deliveries=DeliveryStore(engine),
        events=EventStore(engine),
        schedules=ScheduleStore(engine),
    )
