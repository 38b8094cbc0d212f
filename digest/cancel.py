"""Withdrawing provider batches (SendGrid): how strict mode closes the window of a call in doubt.

A batch is withheld only when cancelled at least `cancel_margin` before its send time,
and SendGrid lets at most 10 batches hold a pause or cancel at once; a hold lapses when
the batch's send time passes. So a cancel refused for the limit is not a reason to give
up: wait for the oldest hold to lapse and cancel again, as long as the batch's own
deadline (send time minus margin) allows. Every wait is bounded by that deadline. A
cancel counts only if its answer came by the deadline: the request reached the provider
before its answer did, so it was in time; a later answer proves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from digest.editions import Edition
from digest.errors import DigestError, ProviderRefusedError, TransportError, UsageError

HOLD_LIMIT = 10  # SendGrid: "no more than 10 different batches at one time"
POLL_SECONDS = 5.0  # pause between cancels refused for holds this store does not know of
MAX_TRIES = 1000  # bound on cancel attempts for one batch, whatever the clock does


@runtime_checkable
class Scheduler(Protocol):
    """A transport that groups sends into provider batches and cancels them (SendGrid)."""

    cancel_margin: timedelta
    strict_lead: timedelta
    request_timeout: float

    def create_batch(self) -> str: ...
    def cancel_batch(self, batch_id: str) -> None: ...


class HoldLedger(Protocol):
    """What withdrawing needs from the ledger (digest.store.deliveries.DeliveryStore)."""

    def holding(self, edition: Edition) -> AbstractContextManager[None]: ...
    def holds(self, *, now: datetime) -> list[datetime]: ...
    def add_hold(
        self, batch_id: str, edition_key: str, *, until: datetime, now: datetime
    ) -> None: ...
    def release(self, edition_key: str, batch_id: str | None, *, now: datetime) -> int: ...
    def scheduled(self, edition_key: str, *, now: datetime) -> list[tuple[str, datetime]]: ...


@dataclass(frozen=True)
class Withdrawer:
    """Cancels provider batches of one edition within their deadlines, minding the hold limit."""

    edition_key: str
    ledger: HoldLedger
    scheduler: Scheduler
    now: Callable[[], datetime]
    sleep: Callable[[float], None]

    def room(self, *, before: datetime | None = None, calls: int = 1) -> bool:
        """Wait until at most HOLD_LIMIT - `calls` holds remain, so that each of `calls`
        batches in flight, if in doubt, can be cancelled at once; False when that cannot
        happen before `before`."""
        keep = max(HOLD_LIMIT - calls, 0)
        for _ in range(MAX_TRIES):
            now = self.now()
            holds = self.ledger.holds(now=now)
            if len(holds) <= keep:
                return True
            lapse = holds[len(holds) - keep - 1]  # the hold whose lapse makes room
            if before is not None and lapse >= before:
                return False
            self.sleep(max((lapse - now).total_seconds(), 0.0) + 0.5)
        raise DigestError(f"sendgrid: the holds of {self.edition_key} never lapsed")

    def withdraw(self, batch_id: str, send_at: datetime) -> int | None:
        """Cancel `batch_id` and put its rows back to pending (returns how many); None when
        its deadline passed (or passes while waiting) without a cancel the provider took."""
        deadline = send_at - self.scheduler.cancel_margin
        for _ in range(MAX_TRIES):
            if self.now() >= deadline or not self.room(before=deadline):
                return None
            try:
                self.scheduler.cancel_batch(batch_id)
            except TransportError as exc:
                if exc.fatal:
                    raise ProviderRefusedError(exc.message, hint=ACCOUNT_HINT) from None
                # refused for holds made elsewhere on the account, or no answer: try again
                pause = min(POLL_SECONDS, (deadline - self.now()).total_seconds())
                if pause <= 0:
                    return None
                self.sleep(pause)
                continue
            now = self.now()
            self.ledger.add_hold(batch_id, self.edition_key, until=send_at, now=now)
            if now > deadline:
                # The cancel was taken, but its answer came after the deadline: it may have
                # reached the provider too late to withhold the batch. Nothing proves either.
                return None
            return self.ledger.release(self.edition_key, batch_id, now=now)
        return None


ACCOUNT_HINT = (
    "check the provider credentials (delivery.sendgrid.api_key_env, or the SMTP login), "
    "then run the same command again: rows not delivered are still pending"
)


@dataclass(frozen=True)
class CancelSummary:
    batches: int
    rows: int
    missed: int = 0  # batches too close to their send time (or past it) to be withheld


def cancel_scheduled(
    edition: Edition,
    *,
    ledger: HoldLedger,
    transport: object,
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
) -> CancelSummary:
    """Cancel every provider batch of the edition still far enough ahead to be withheld.

    Takes the edition's lock, like a send. Its rows go back to pending, so the next
    `send` delivers them (on a new schedule).
    """
    if not isinstance(transport, Scheduler):
        name = getattr(transport, "name", type(transport).__name__)
        raise UsageError(
            f"cancelling needs a transport with provider batches (sendgrid), not {name}"
        )
    with ledger.holding(edition):
        withdrawer = Withdrawer(edition.key, ledger, transport, now, sleep)
        batches, missed, rows = 0, 0, 0
        for batch_id, send_at in ledger.scheduled(edition.key, now=now()):
            released = withdrawer.withdraw(batch_id, send_at)
            if released is None:
                missed += 1
            else:
                batches, rows = batches + 1, rows + released
    return CancelSummary(batches=batches, rows=rows, missed=missed)
