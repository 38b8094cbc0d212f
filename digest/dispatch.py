"""Starting, cancelling and finishing an edition's send, as `digest send`, `digest cancel`,
`digest run-due` and the workers do: the edition's state moves with its ledger.

`send_now` moves the edition to sending, sends through `send.send_edition` (a cancel from
elsewhere stops it after the batch in flight) and `finish` marks it sent once no row is
left. `cancel_edition` marks it cancelled and withdraws its SendGrid batches still far
enough ahead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from digest import lifecycle
from digest.cancel import CancelSummary, cancel_scheduled
from digest.config import Config
from digest.editions import Edition
from digest.errors import UsageError
from digest.lifecycle import CANCELLED, SENDING, SENT, SKIPPED
from digest.send import Progress, SendOptions, SendSummary, send_edition
from digest.store import Store
from digest.store.locks import LockedError
from digest.transports.base import Transport


def send_now(
    edition: Edition,
    *,
    config: Config,
    store: Store,
    transport: Transport,
    secret: str,
    now: Callable[[], datetime],
    options: SendOptions,
    progress: Progress | None = None,
) -> SendSummary:
    """`digest send`: `send_edition`, moving the edition to sending, then to sent when no
    row is left; a cancel from elsewhere stops it after the batch in flight."""
    lifecycle.check_sendable(edition, config.digest(edition.digest))
    lifecycle.move(store.schedules, edition, SENDING, note="sent with digest send", now=now())

    def cancelled() -> bool:
        return store.schedules.state(edition.key) == CANCELLED

    summary = send_edition(
        edition,
        config=config,
        ledger=store.deliveries,
        transport=transport,
        secret=secret,
        now=now,
        options=replace(options, should_stop=cancelled),
        progress=progress,
    )
    finish(store, edition, now=now())
    return summary


LOCK_TRIES = 120  # a cancel waits this many seconds at most for a running send to stop


def cancel_edition(
    edition: Edition,
    *,
    store: Store,
    make_transport: Callable[[], Transport],
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
) -> CancelSummary:
    """Cancel `edition` before or during its send: it becomes cancelled (a running send
    stops after its batch in flight; no schedule starts it) and its SendGrid batches still
    far enough ahead are withdrawn, their rows back to pending."""
    state = store.schedules.state(edition.key)
    scheduled = store.deliveries.scheduled(edition.key, now=now())
    if state == SKIPPED:
        raise UsageError(f"edition {edition.key} was skipped; there is nothing to cancel")
    if state == SENT and not scheduled:
        raise UsageError(f"edition {edition.key} was sent; there is nothing left to cancel")
    lifecycle.move(store.schedules, edition, CANCELLED, note="cancelled by an editor", now=now())
    if not scheduled:
        return CancelSummary(batches=0, rows=0)
    transport = make_transport()
    try:
        for _ in range(LOCK_TRIES):
            try:
                return cancel_scheduled(
                    edition, ledger=store.deliveries, transport=transport, now=now, sleep=sleep
                )
            except LockedError:  # the running send lets go after its batch in flight
                sleep(1.0)
    finally:
        transport.close()
    raise LockedError(
        f"a send of {edition.key} kept running; its edition is cancelled but its "
        "scheduled batches were not withdrawn",
        hint="run digest cancel again once it stopped",
    )


def finish(store: Store, edition: Edition, *, now: datetime) -> bool:
    """Move an edition in `sending` to `sent` once no row is left to send."""
    if store.schedules.unsent(edition.key):
        return False
    counts = store.deliveries.counts(edition.key)
    note = ", ".join(f"{state} {n}" for state, n in counts.items() if n)
    return lifecycle.move(store.schedules, edition, SENT, note=note or "no recipients", now=now)
