"""One batch's life: claim it in the ledger, call the provider, settle the outcome.

What a failed call proves decides what follows (see `transports.base.SendResult`):
retried under a new claim when the provider accepted nothing, cancelled and sent again
in strict mode when in doubt (failed with the IN_DOUBT reason otherwise), and the run
stopped when the account is refused or too many batches in a row failed. `reconcile`
settles the same way what a crash left in `sending`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from digest.cancel import ACCOUNT_HINT, Scheduler
from digest.errors import ProviderRefusedError, TransportError
from digest.retry import call_transport
from digest.transports.base import OutgoingEmail, SendResult

if TYPE_CHECKING:
    from digest.send import Run

IN_DOUBT = "in doubt: the provider may have accepted it, but no answer came"


def send_batch(run: Run, email: OutgoingEmail) -> None:
    """Claim, send and settle one composed batch on its own (a worker's unit: digest.workers);
    rows no longer pending are left out, so a batch handed out twice is sent once."""
    claimed = claim(run, email)
    if claimed is not None:
        settle(run, claimed, call_transport(run.transport, claimed))


def claim(run: Run, email: OutgoingEmail) -> OutgoingEmail | None:
    """Claim a composed batch right before its call; None when no row of it is still due.

    Rows whose subscriber left meanwhile become suppressed, rows no longer pending are
    dropped: the message keeps only the recipients this run now owns.
    """
    options, scheduler = run.options, run.scheduler
    batch_id, send_at = None, None
    if scheduler is not None and options.strict:
        # Its own batch per request, so a call in doubt is cancelled without touching
        # others; and room for one more cancel, so that cancel can never be refused.
        run.withdrawer().room(calls=run.in_flight)
        batch_id = _create_batch(run, scheduler)
        send_at = max(options.send_at or run.now(), run.now() + scheduler.strict_lead)
    elif scheduler is not None and options.send_at is not None:
        # one batch for the run: SendGrid holds at most 10 cancelled batches at a time,
        # so `digest cancel` must be one call
        if run.batch_id is None:
            run.batch_id = _create_batch(run, scheduler)
        batch_id, send_at = run.batch_id, options.send_at
    ids = [r.delivery_id for r in email.recipients]
    claimed, _gone = run.ledger.claim(
        run.edition.key, ids, batch_id=batch_id, scheduled_at=send_at, now=run.now()
    )
    if not claimed:
        return None
    recipients = email.recipients
    if len(claimed) < len(ids):
        recipients = tuple(r for r in recipients if r.delivery_id in claimed)
    return replace(email, recipients=recipients, batch_id=batch_id, send_at=send_at)


def _create_batch(run: Run, scheduler: Scheduler) -> str:
    """A new provider batch id; an unused one costs nothing, so failures are simply retried."""
    attempt, waited = 1, 0.0
    while True:
        try:
            return scheduler.create_batch()
        except TransportError as exc:
            if exc.fatal:
                raise ProviderRefusedError(exc.message, hint=ACCOUNT_HINT) from None
            wait = run.policy.next_wait(attempt, waited, None, run.rng)
            if wait is None:
                raise
        run.sleep(wait)
        waited += wait
        attempt += 1


def settle(run: Run, email: OutgoingEmail, results: list[SendResult]) -> None:
    """Record the outcome of `email`'s call, trying again what provably was not accepted.

    Each new try is a new claim (the rows went back to pending first), so it skips anyone
    who unsubscribed, bounced or complained meanwhile.
    """
    attempt, waited = 1, 0.0
    while True:
        if any(r.fatal for r in results):
            run.ledger.release_ids([r.delivery_id for r in email.recipients], now=run.now())
            error = next(r.error for r in results if r.fatal)
            raise ProviderRefusedError(
                f"{error}: the provider refused the account; the run stopped", hint=ACCOUNT_HINT
            )
        final = [r for r in results if r.ok or not (r.retryable or r.in_doubt)]
        again = [r for r in results if not r.ok and r.retryable]
        doubt = [r for r in results if not r.ok and r.in_doubt]
        if doubt and _withdraw(run, email):
            # the whole provider batch was cancelled: none of it goes out, all of it again
            again += [r for r in results if r.ok or r.in_doubt]
            final = [r for r in final if not r.ok]
        elif doubt:
            run.in_doubt += len(doubt)
            final += [r._replace(error=f"{IN_DOUBT} ({r.error})") for r in doubt]
        wait = None
        if again:
            hint = max((r.retry_after or 0.0 for r in again), default=0.0) or None
            wait = run.policy.next_wait(attempt, waited, hint, run.rng)
            if wait is None:
                gave_up = f"(gave up after {attempt} attempts)"
                final += [
                    r._replace(ok=False, error=f"{r.error} {gave_up}", in_doubt=False)
                    for r in again
                ]
        run.ledger.record(final, batch_id=email.batch_id, now=run.now())
        run.sent += sum(1 for r in final if r.ok)
        _check_streak(run, final)
        if wait is None:
            return
        retry = sorted({r.delivery_id for r in again})
        run.ledger.release_ids(retry, now=run.now())  # rows of a cancelled batch already are
        run.sleep(wait)
        waited += wait
        attempt += 1
        kept = set(retry)
        pending = replace(
            email, recipients=tuple(r for r in email.recipients if r.delivery_id in kept)
        )
        claimed = claim(run, pending)
        if claimed is None:
            return
        email, results = claimed, call_transport(run.transport, claimed)


def _withdraw(run: Run, email: OutgoingEmail) -> bool:
    """Strict mode: cancel the provider batch of a call in doubt; False if it cannot be."""
    if not run.options.strict or email.batch_id is None or email.send_at is None:
        return False
    if run.scheduler is None or run.withdrawer().withdraw(email.batch_id, email.send_at) is None:
        return False
    run.withdrawn += 1
    return True


def _check_streak(run: Run, final: list[SendResult]) -> None:
    """Stop the run when `max_failed_batches` batches in a row failed for every recipient."""
    if not final:
        return
    if any(r.ok for r in final):
        run.failed_in_a_row = 0
        return
    run.failed_in_a_row += 1
    limit = run.config.delivery.max_failed_batches
    if run.failed_in_a_row >= limit:
        raise ProviderRefusedError(
            f"{limit} batches in a row failed (last: {final[-1].error}); the run stopped",
            hint="fix the cause, then run again: rows not yet sent are still pending, "
            "failed ones go again with --retry-failed",
        )


def _cancelled(run: Run, batch_id: str | None, send_at: datetime | None) -> bool:
    """Whether a batch left in doubt by a crash was cancelled (its rows back to pending)."""
    if batch_id is None or send_at is None or run.scheduler is None:
        return False
    return run.withdrawer().withdraw(batch_id, send_at) is not None


def reconcile(run: Run) -> int:
    """Settle rows a crash left in `sending`; returns how many were in doubt.

    A provider batch whose send time is still far enough ahead is cancelled (waiting for
    room under the provider's hold limit if need be) and its rows go back to pending, to
    be sent again once. Any other row cannot be known to be unsent, so it is marked
    failed with the IN_DOUBT reason, for `--retry-failed` to decide.
    """
    key, total = run.edition.key, 0
    for batch_id, send_at, count in run.ledger.in_doubt(key):
        if _cancelled(run, batch_id, send_at):
            run.withdrawn += 1
            continue
        total += count
        run.ledger.fail_in_doubt(key, batch_id, IN_DOUBT, now=run.now())
    return total
