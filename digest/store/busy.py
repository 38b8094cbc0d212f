"""Riding out a busy SQLite database: a write that finds it locked waits and tries again.

SQLite has one writer at a time. Its busy timeout covers most waits, but not a
transaction that read first and then finds another writer committed meanwhile (it gets
"database is locked" at once). Every write of the ledger goes through `retry_locked`,
which starts the whole transaction again, within a time bound; past it, BusyError says
which command to wait for. Long writers elsewhere commit in short chunks so the bound
is never near.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from digest.errors import BusyError

T = TypeVar("T")
WAIT_SECONDS = 120.0  # total wait for one write before giving up
FIRST_PAUSE = 0.02
LONGEST_PAUSE = 1.0


def is_locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database table is locked" in text


def retry_locked(
    write: Callable[[], T],
    *,
    what: str,
    wait: float = WAIT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `write` (a whole transaction); on a locked database, pause and run it again."""
    deadline = clock() + wait
    pause = FIRST_PAUSE
    while True:
        try:
            return write()
        except OperationalError as exc:
            if not is_locked(exc):
                raise
            if clock() + pause > deadline:
                raise BusyError(
                    f"store: {what}: the database stayed locked for {wait:g} s",
                    hint="another command (an import?) is writing; run this one again "
                    "when it has finished: nothing was lost",
                ) from None
        sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


@contextmanager
def synced(conn: Connection) -> Iterator[None]:
    """Make the SQLite transaction begun inside this block reach the disk when it commits.

    The store runs SQLite in WAL mode with synchronous=NORMAL: a commit survives the
    process dying, not the machine losing power. What must survive both (a ledger claim
    before its provider call, an unsubscribe before its answer) commits inside this block,
    with synchronous=FULL; one sync of the WAL also covers every commit before it.
    PostgreSQL syncs every commit already.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    # On the driver's connection: through SQLAlchemy, a statement would begin a transaction.
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA synchronous=FULL")
    try:
        yield
    finally:
        raw.execute("PRAGMA synchronous=NORMAL")
