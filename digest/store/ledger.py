"""What the ledger's parts share: the deliveries table's columns and conditions, and the
one way each of them writes (one transaction, started again while the database is locked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Integer,
    Text,
    any_,
    bindparam,
    column,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY

from digest.store.busy import retry_locked, synced
from digest.store.schema import deliveries

T = TypeVar("T")

_d = deliveries.c
STATES = ("pending", "sending", "sent", "failed", "suppressed")  # a row's, in order
# Written out, not bound: the planner sees the state a query asks for.
PENDING = _d.state == literal_column("'pending'")

# A batch's row ids travel as one parameter (a JSON array for SQLite's json_each, an
# array on PostgreSQL), so a statement compiles once and binds one value, not 1,000.
_SQLITE_IDS = _d.id.in_(
    select(column("value", Integer)).select_from(func.json_each(bindparam("ids", type_=Text)))
)
_POSTGRES_IDS = _d.id == any_(bindparam("ids", type_=ARRAY(Integer)))
ONE_PARAMETER = 1000  # ids per statement when they travel as one parameter (a whole batch)


class LedgerBase:
    """The engine, the dialect's one-parameter id list, and the one way to write."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._in_ids = _POSTGRES_IDS if self._postgres else _SQLITE_IDS

    def _ids(self, ids: Sequence[int]) -> dict[str, Any]:
        """The parameter `self._in_ids` takes for these row ids."""
        return {"ids": list(ids) if self._postgres else orjson.dumps(list(ids)).decode()}

    def _write(self, what: str, work: Callable[[Connection], T], *, durable: bool = False) -> T:
        """Run `work` in one transaction, starting it again while the database is locked;
        `durable`: its commit reaches the disk before this returns (see busy.synced)."""

        def attempt() -> T:
            with self.engine.connect() as conn:
                if durable:
                    with synced(conn), conn.begin():
                        return work(conn)
                with conn.begin():
                    return work(conn)

        return retry_locked(attempt, what=what)


def chunks(ids: list[int]) -> Iterator[list[int]]:
    """The ids in lists of at most ONE_PARAMETER, each bound as a statement's one parameter."""
    for start in range(0, len(ids), ONE_PARAMETER):
        yield ids[start : start + ONE_PARAMETER]


def driver_rows(result: CursorResult[Any]) -> Sequence[Any]:
    """The result's rows as the driver's own tuples, for columns that need no conversion
    (ids, text): at a batch's or a chunk's thousands of rows, skipping the result's own
    row objects halves the cost of reading them."""
    with result:
        return result.cursor.fetchall()
