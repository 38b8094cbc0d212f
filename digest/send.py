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
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from digest import compose
from digest.compose import ContentCache, Renderer, Row
from digest.config import Config
from digest.editions import Edition
from digest.errors import TransportError, UsageError
from digest.experiments.assign import Assign, edition_assigner
from digest.retry import RetryPolicy, Uniform, call_transport, settle
from digest.subscribers import Subscriber
from digest.tokens import LinkSigner
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
    def pending(
        self, edition_key: str, content_key: str, limit: int, *, after: int = 0
    ) -> Sequence[Row]: ...
    def claim(
        self,
        edition_key: str,
        ids: Sequence[int],
        *,
        batch_id: str | None,
        scheduled_at: datetime | None,
        now: datetime,
    ) -> tuple[AbstractSet[int], int]: ...
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

    def record(self, final: list[SendResult], retries: int) -> None:
        self.ledger.record(final, retries=retries, now=self.now())


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
    assign: Assign | None = None,
) -> SendSummary:
    """Send `edition` to every active subscriber sharing one of its topics, each exactly once.

    Safe to run again at any time: rows already sent are skipped, rows a crash left in
    doubt are reconciled first (see the module doc). Returns what the run did.
    `assign` plans rows (content key, variant); by default the digest's A/B test group,
    or everyone as variant A (see digest.experiments.assign).
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
    ledger.plan(key, assign or edition_assigner(config, edition), now=now())
    reconcile(key, ledger=ledger, transport=transport, now=now)
    if options.retry_failed:
        ledger.retry_failed(key, now=now())
    skipped = ledger.counts(key)["sent"]
    ledger.suppress_inactive(key, now=now())
    total = ledger.counts(key)["pending"]
    _send_pending(run, progress, total)
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


def _send_pending(run: _Run, progress: Progress | None, total: int) -> None:
    """Send every pending row, batch by batch: claim (commit) → provider call → record (commit).

    While the provider answers batch N (in a worker thread: the wait releases the GIL),
    batch N+1 is read and composed but not claimed; it is claimed only after N's results
    are committed. So at most one batch is ever in `sending`, as without the overlap.
    """
    if progress is not None:
        progress(0, total)
    batches = _composed(run)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-send") as worker:
        email = next(batches, None)
        while email is not None:
            claimed = _claim(run, email)
            call = claimed and (claimed, worker.submit(call_transport, run.transport, claimed))
            try:
                following = next(batches, None)
            finally:
                if call:  # recorded even when composing the next batch failed
                    run.sent += settle(
                        call[0], call[1].result(), transport=run.transport, policy=run.policy,
                        rng=run.rng, sleep=run.sleep, record=run.record,
                    )  # fmt: skip
            run.done += len(email.recipients)
            if progress is not None:
                progress(run.done, total)
            email = following


def _composed(run: _Run) -> Iterator[OutgoingEmail]:
    """The pending rows as messages of up to a batch each, one content key at a time; the
    rows are read, not claimed, so composing ahead changes nothing in the ledger."""
    key, size = run.edition.key, run.options.batch_size
    for content_key in run.ledger.content_keys(key):
        after = 0
        while rows := run.ledger.pending(key, content_key, size, after=after):
            recipients = compose.recipients(rows, links=run.links, edition_key=key)
            content = run.cache.get(content_key)
            yield compose.compose(content, recipients, config=run.config, edition=run.edition)
            if len(rows) < size:
                break
            after = rows[-1].id


def _claim(run: _Run, email: OutgoingEmail) -> OutgoingEmail | None:
    """Claim a composed batch right before its call; None when no row of it is still due.

    Rows whose subscriber left meanwhile become suppressed, rows no longer pending are
    dropped: the message keeps only the recipients this run now owns.
    """
    options = run.options
    scheduler = run.transport if isinstance(run.transport, Scheduler) else None
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
    return call_transport(transport, email)


test_send.__test__ = False  # type: ignore[attr-defined]  # a library function, not a pytest test
