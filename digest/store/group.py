"""Group commit: concurrent callers' small writes go to the database in one transaction.

Each caller queues its item and then takes turns on one lock. Whoever holds it and finds
its own item still queued writes everything queued so far in one transaction and hands
each caller its result; the others, finding theirs already written, return at once. So
no caller returns before the transaction holding its item has committed, a busy moment
costs one commit for many callers, and there is no thread to start or stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from digest.errors import BusyError

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Pending(Generic[Item, Result]):
    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    """Runs `write(items, wait)` (one transaction, one result per item, in order) for
    batches of the items callers `submit` at about the same time."""

    def __init__(
        self,
        write: Callable[[Sequence[Item], float], Sequence[Result]],
        *,
        what: str,
    ) -> None:
        self._write = write
        self._what = what
        self._turn = threading.Lock()  # one batch at a time
        self._guard = threading.Lock()  # the queue
        self._queue: list[_Pending[Item, Result]] = []

    def submit(self, item: Item, *, wait: float) -> Result:
        """`item`'s result once its transaction has committed.

        BusyError if the database stayed locked for `wait` seconds: then the item was
        not written (it was withdrawn from the queue, or its transaction rolled back).
        """
        return self.submit_many([item], wait=wait)[0]

    def submit_many(self, items: Sequence[Item], *, wait: float) -> list[Result]:
        """`submit` for several items at once, which go to the database together."""
        if not items:
            return []
        pending: list[_Pending[Item, Result]] = [_Pending(item) for item in items]
        with self._guard:
            self._queue.extend(pending)
        if not self._turn.acquire(timeout=max(wait, 0.0)):
            with self._guard:
                # queued together, they are taken together: the first says for all
                if pending[0] in self._queue:  # nobody took them: they will never be written
                    mine = set(map(id, pending))
                    self._queue = [p for p in self._queue if id(p) not in mine]
                    raise BusyError(
                        f"store: {self._what}: the database stayed locked for {wait:g} s",
                        hint="another command is writing; nothing was changed",
                    )
            # A batch in flight holds them: its outcome, whichever it is, is theirs.
            self._turn.acquire()
        try:
            if not pending[0].done:
                self._lead(wait)
        finally:
            self._turn.release()
        for p in pending:
            if p.error is not None:
                raise p.error
        return [p.result for p in pending]  # type: ignore[misc]

    def _lead(self, wait: float) -> None:
        with self._guard:
            batch, self._queue = self._queue, []
        try:
            results = self._write([p.item for p in batch], wait)
        except BaseException as exc:  # every caller of the batch learns it was not written
            for p in batch:
                p.error, p.done = exc, True
            return
        for p, result in zip(batch, results, strict=True):
            p.result, p.done = result, True
