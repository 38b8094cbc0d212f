"""The store: SQLAlchemy Core over a SQLite file by default, PostgreSQL by URL.

Each concern has its own small repository class; `Store` just holds them together so
one object can be passed around. Stages that only need a few operations declare them
as a Protocol (see `digest.ledger.Ledger`) instead of importing this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError

from digest.errors import DigestError
from digest.store.articles import ArticleStore
from digest.store.consents import ConsentStore
from digest.store.deliveries import DeliveryStore
from digest.store.editions import EditionStore
from digest.store.events import EventStore
from digest.store.experiments import ExperimentStore
from digest.store.migrate import check_version
from digest.store.schedules import ScheduleStore
from digest.store.subscribers import SubscriberStore


@dataclass
class Store:
    engine: Engine
    articles: ArticleStore
    editions: EditionStore
    subscribers: SubscriberStore
    deliveries: DeliveryStore
    events: EventStore
    experiments: ExperimentStore
    consents: ConsentStore
    schedules: ScheduleStore

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        """Whether the database answers a trivial query (for health checks)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets a reader (the web side) work while a send writes; busy_timeout rides out
    # short lock waits instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def connect(url: str) -> Engine:
    """An engine for `url`; a bad URL or a missing driver is a DigestError saying which."""
    try:
        server = make_url(url).get_backend_name() != "sqlite"
        # a server's pooled connection is checked as it is taken, so one it dropped (a
        # restart, a network cut) is replaced instead of failing the next statement
        engine = create_engine(url, pool_pre_ping=server)
    except ModuleNotFoundError as exc:
        raise DigestError(
            f"store: no driver for {_shown(url)}: {exc}",
            hint="for PostgreSQL: pip install 'digest[postgres]'",
        ) from None
    except (ArgumentError, ImportError) as exc:
        raise DigestError(f"store: cannot open {_shown(url)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store at `url` after checking its schema version.

    An empty database is created at the current version unless `create` is False; a store
    of another version is refused with a hint to run `digest db upgrade`.
    """
    engine = connect(url)
    try:
        check_version(engine, create=create)
    except (OperationalError, InterfaceError) as exc:
        engine.dispose()
        raise DigestError(f"store: cannot open {_shown(url)}: {exc.orig}") from None
    except DigestError:
        engine.dispose()
        raise
    return Store(
        engine=engine,
        articles=ArticleStore(engine),
        editions=EditionStore(engine),
        subscribers=SubscriberStore(engine),
        deliveries=DeliveryStore(engine),
        events=EventStore(engine),
        experiments=ExperimentStore(engine),
        consents=ConsentStore(engine),
        schedules=ScheduleStore(engine),
    )


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)
