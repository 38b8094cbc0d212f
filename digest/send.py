"""Deliver an edition exactly once per subscriber: plan, reconcile, then claim → send → record.

Each batch is claimed in the ledger (committed) before the provider is called, and its
results are recorded (committed) right after, so a crash leaves at most the one batch in
flight in doubt. What happens to that batch is decided at the next run (`reconcile`):

- strict mode (SendGrid): every batch has its own provider batch and a send time 11
  minutes ahead, so a batch in doubt is cancelled at the provider and sent again: no
  duplicate, nothing missing;
- otherwise its rows become `failed` with an "in doubt" reason and are not sent again on
  their own; `retry_failed` sends them again, accepting that some may arrive twice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from digest import compose
from digest.compose import ContentCache, LinkSigner, Renderer, Row
from digest.config import Config
from digest.editions import Edition
from digest.errors import TransportError, UsageError
from digest.retry import RetryPolicy, Uniform
from digest.subscribers import Subscriber
from digest.transports.base import OutgoingEmail, SendResult, Transport

IN_DOUBT = "in doubt: interrupted while the provider was answering; it may have been delivered"
# SendGrid withholds a cancelled batch only when cancelled at least 10 minutes ahead.
CANCEL_MARGIN = timedelta(minutes=10)
STRICT_LEAD = timedelta(minutes=11)
SEND_AT_LIMIT = timedelta(hours=72)


class Ledger(Protocol):
    """The ledger operations sending needs (digest.store.deliveries.DeliveryStore)."""

    def plan(
        self,
        edition_key: str,
        assign: Callable[[int, Sequence[str]], tuple[str, str] | None],
        *,
        now: datetime,
    ) -> int: ...
    def content_keys(self, edition_key: str) -> list[str]: ...
    def suppress_inactive(self, edition_key: str, *, now: datetime) -> int: ...
    def claim(
        self,
        edition_key: str,
        content_key: str,
        limit: int,
        *,
        batch_id: str | None,
        scheduled_at: datetime | None,
        now: datetime,
    ) -> tuple[Sequence[Row], int]: ...
    def record(self, results: Sequence[SendResult], *, retries: int, now: datetime) -> None: ...
    def in_doubt(self, edition_key: str) -> list[tuple[str | None, datetime | None, int]]: ...
    def release(self, edition_key: str, batch_id: str | None, *, now: datetime) -> int: ...
    def fail_in_doubt(
        self, edition_key: str, batch_id: str | None, reason: str, *, now: datetime
    ) -> int: ...
    def retry_failed(self, edition_key: str, *, now: datetime) -> int: ...
    def scheduled(self, edition_key: str, *, now: datetime) -> list[str]: ...
    def counts(self, edition_key: str) -> dict[str, int]: ...
    def failures(self, edition_key: str) -> dict[str, int]: ...


@runtime_checkable
class Scheduler(Protocol):
    """A transport that can group sends into provider batches and cancel them (SendGrid)."""

    def create_batch(self) -> str: ...
    def cancel_batch(self, batch_id: str) -> None: ...


@dataclass(frozen=True)
class SendOptions:
    """How to run a send; the defaults deliver now, in the configured batch size."""

    batch_size: int = 500
    retry_failed: bool = False
    strict: bool = False
    send_at: datetime | None = None


@dataclass(frozen=True)
class SendSummary:
    """What a run did. `sent` is this run's; `skipped` were sent by earlier runs;
    `suppressed` and `failed` are the edition's rows in those states at the end."""

    edition: str
    planned: int
    sent: int
    skipped: int
    suppressed: int
    failed: int
    pending: int
    failures: tuple[tuple[str, int], ...] = ()  # (reason, rows), most frequent first
    elapsed: float = 0.0
    renders: int = 0  # distinct contents rendered by this run

    def line(self) -> str:
        return (
            f"sent {self.sent}, skipped {self.skipped}, "
            f"suppressed {self.suppressed}, failed {self.failed}"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["failures"] = [{"reason": r, "count": n} for r, n in self.failures]
        return out


Progress = Callable[[int, int], None]  # (rows done, rows to do)


@dataclass
class _Run:
    """The fixed inputs of one send, passed between the loop's steps."""

    edition: Edition
    config: Config
    ledger: Ledger
    transport: Transport
    links: LinkSigner
    now: Callable[[], datetime]
    options: SendOptions
    sleep: Callable[[float], None]
    rng: Uniform
    cache: ContentCache
    policy: RetryPolicy
    batch_id: str | None = None  # the run's provider batch for a non-strict scheduled send
    sent: int = 0
    done: int = 0


def send_edition(
    edition: Edition,
    *,
    config: Config,
    ledger: Ledger,
    transport: Transport,
    secret: str,
    now: Callable[[], datetime],
    options: SendOptions | None = None,
    render: Renderer | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: Uniform | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SendSummary:
    """Send `edition` to every active subscriber sharing one of its topics, each exactly once.

    Safe to run again at any time: rows already sent are skipped, rows a crash left in
    doubt are reconciled first (see the module doc). Returns what the run did.
    """
    started = clock()
    options = options or SendOptions(batch_size=config.delivery.batch_size)
    _check(options, transport, now())
    run = _Run(
        edition=edition,
        config=config,
        ledger=ledger,
        transport=transport,
        links=LinkSigner(config.site.base_url, secret),
        now=now,
        options=options,
        sleep=sleep,
        rng=rng or random.Random(),
        cache=ContentCache(render or compose.default_renderer(config, edition)),
        policy=RetryPolicy(config.delivery.max_attempts, config.delivery.max_retry_seconds),
    )
    key = edition.key
    edition_topics = edition.topics()
    ledger.plan(key, lambda _id, topics: _assign(topics, edition_topics), now=now())
    reconcile(key, ledger=ledger, transport=transport, now=now)
    if options.retry_failed:
        ledger.retry_failed(key, now=now())
    skipped = ledger.counts(key)["sent"]
    ledger.suppress_inactive(key, now=now())
    total = ledger.counts(key)["pending"]
    if progress is not None:
        progress(0, total)
    for content_key in ledger.content_keys(key):
        for claimed in _batches(run, content_key):
            run.done += claimed
            if progress is not None:
                progress(run.done, total)
    counts = ledger.counts(key)
    failures = sorted(ledger.failures(key).items(), key=lambda kv: (-kv[1], kv[0]))
    return SendSummary(
        edition=key,
        planned=sum(counts.values()),
        sent=run.sent,
        skipped=skipped,
        suppressed=counts["suppressed"],
        failed=counts["failed"],
        pending=counts["pending"] + counts["sending"],
        failures=tuple(failures),
        elapsed=round(clock() - started, 3),
        renders=run.cache.renders,
    )


def _assign(topics: Sequence[str], edition_topics: Sequence[str]) -> tuple[str, str] | None:
    # One variant until experiments assign others.
    key = compose.content_key(topics, edition_topics, "A")
    return (key, "A") if key else None


def _check(options: SendOptions, transport: Transport, now: datetime) -> None:
    if options.batch_size < 1 or options.batch_size > 1000:
        raise UsageError(f"batch size {options.batch_size}: use 1 to 1000")
    scheduled = options.strict or options.send_at is not None
    if scheduled and not isinstance(transport, Scheduler):
        what = "strict mode" if options.strict else "a scheduled send (--send-at)"
        raise UsageError(
            f"{what} needs a transport with provider batches (sendgrid), not {transport.name}"
        )
    if options.send_at is not None and not now <= options.send_at <= now + SEND_AT_LIMIT:
        raise UsageError(f"send time {options.send_at.isoformat()} is not within the next 72 hours")


def _batches(run: _Run, content_key: str) -> Iterator[int]:
    """Claim and send batches of one content key until none is pending; yields rows handled."""
    options, key = run.options, run.edition.key
    scheduler = run.transport if isinstance(run.transport, Scheduler) else None
    while True:
        batch_id, send_at = None, None
        if scheduler is not None and options.strict:
            # its own batch per request: a batch in doubt is cancelled without touching others
            batch_id = scheduler.create_batch()
            send_at = max(options.send_at or run.now(), run.now() + STRICT_LEAD)
        elif scheduler is not None and options.send_at is not None:
            # one batch for the run: SendGrid holds at most 10 cancelled batches at a time,
            # so `digest cancel` must be one call
            if run.batch_id is None:
                run.batch_id = scheduler.create_batch()
            batch_id, send_at = run.batch_id, options.send_at
        rows, gone = run.ledger.claim(
            key,
            content_key,
            options.batch_size,
            batch_id=batch_id,
            scheduled_at=send_at,
            now=run.now(),
        )
        if not rows and not gone:
            return
        if rows:
            _deliver(run, rows, batch_id, send_at)
        yield len(rows) + gone


def _deliver(
    run: _Run, rows: Sequence[Row], batch_id: str | None, send_at: datetime | None
) -> None:
    """Send one claimed batch, retrying what can be retried; every result is recorded."""
    content = run.cache.get(rows[0].content_key)
    waiting = {r.id: compose.recipient(r, links=run.links, edition=run.edition) for r in rows}
    attempt, waited = 0, 0.0
    while waiting:
        attempt += 1
        email = compose.compose(
            content,
            list(waiting.values()),
            config=run.config,
            edition=run.edition,
            batch_id=batch_id,
            send_at=send_at,
        )
        results = _call(run.transport, email)
        final = [r for r in results if r.ok or not r.retryable]
        again = [r for r in results if not r.ok and r.retryable]
        wait = None
        if again:
            hint = max((r.retry_after or 0.0 for r in again), default=0.0) or None
            wait = run.policy.next_wait(attempt, waited, hint, run.rng)
            if wait is None:
                final += [
                    replace(r, error=f"{r.error} (gave up after {attempt} attempts)") for r in again
                ]
                again = []
        run.ledger.record(final, retries=attempt - 1, now=run.now())
        run.sent += sum(1 for r in final if r.ok)
        for r in final:
            waiting.pop(r.delivery_id, None)
        if again and wait is not None:
            run.sleep(wait)
            waited += wait
            waiting = {
                r.delivery_id: waiting[r.delivery_id] for r in again if r.delivery_id in waiting
            }


def _call(transport: Transport, email: OutgoingEmail) -> list[SendResult]:
    """The transport's per-recipient results; a whole-call error applies to every recipient."""
    recipients = email.recipients
    try:
        results = transport.send(email)
    except TransportError as exc:
        return [
            SendResult(
                delivery_id=r.delivery_id, ok=False, error=exc.message, retryable=exc.retryable
            )
            for r in recipients
        ]
    asked = {r.delivery_id for r in recipients}
    answered = {r.delivery_id for r in results}
    # a recipient the transport forgot is treated as a fault worth retrying, never as sent
    missing = [
        SendResult(
            delivery_id=r.delivery_id,
            ok=False,
            error=f"{transport.name}: no result",
            retryable=True,
        )
        for r in recipients
        if r.delivery_id not in answered
    ]
    return [r for r in results if r.delivery_id in asked] + missing


def reconcile(
    edition_key: str, *, ledger: Ledger, transport: Transport, now: Callable[[], datetime]
) -> int:
    """Settle rows a crash left in `sending`; returns how many were in doubt.

    A provider batch whose send time is still ≥ 10 minutes ahead is cancelled and its rows
    go back to pending (they are sent again, once). Any other row cannot be known to be
    unsent, so it is marked failed with the IN_DOUBT reason, for `--retry-failed` to decide.
    """
    total = 0
    for batch_id, send_at, count in ledger.in_doubt(edition_key):
        total += count
        cancellable = (
            batch_id is not None and send_at is not None and send_at - now() >= CANCEL_MARGIN
        )
        if cancellable and batch_id is not None and isinstance(transport, Scheduler):
            try:
                transport.cancel_batch(batch_id)
            except TransportError:
                pass  # not cancelled: the rows stay in doubt below
            else:
                ledger.release(edition_key, batch_id, now=now())
                continue
        ledger.fail_in_doubt(edition_key, batch_id, IN_DOUBT, now=now())
    return total


@dataclass(frozen=True)
class CancelSummary:
    batches: int
    rows: int


def cancel_scheduled(
    edition_key: str, *, ledger: Ledger, transport: Transport, now: Callable[[], datetime]
) -> CancelSummary:
    """Cancel every provider batch of the edition still far enough ahead to be withheld.

    Its rows go back to pending, so the next `send` delivers them (on a new schedule).
    """
    if not isinstance(transport, Scheduler):
        raise UsageError(
            f"cancelling needs a transport with provider batches (sendgrid), not {transport.name}"
        )
    batches, rows = 0, 0
    for batch_id in ledger.scheduled(edition_key, now=now() + CANCEL_MARGIN):
        transport.cancel_batch(batch_id)
        rows += ledger.release(edition_key, batch_id, now=now())
        batches += 1
    return CancelSummary(batches=batches, rows=rows)


@dataclass(frozen=True)
class _TestRow:
    id: int
    subscriber_id: int
    email: str
    name: str
    variant: str
    content_key: str


def test_send(
    edition: Edition,
    subscriber: Subscriber,
    to: Sequence[str],
    *,
    config: Config,
    transport: Transport,
    secret: str,
    render: Renderer | None = None,
) -> list[SendResult]:
    """Send the edition as `subscriber` would receive it, to `to` only; the ledger is untouched."""
    key = compose.content_key(subscriber.topics, edition.topics(), "A")
    if not key:
        raise UsageError(
            f"{subscriber.email} follows no topic of {edition.key}: they would get nothing"
        )
    content = ContentCache(render or compose.default_renderer(config, edition)).get(key)
    recipients = [
        compose.recipient(
            _TestRow(0, subscriber.id or 0, address, subscriber.name, "A", key),
            links=LinkSigner(config.site.base_url, secret),
            edition=edition,
            test=True,
        )
        for address in to
    ]
    email = compose.compose(
        content, recipients, config=config, edition=edition, subject_prefix="[TEST] "
    )
    return _call(transport, email)


test_send.__test__ = False  # type: ignore[attr-defined]  # a library function, not a pytest test
