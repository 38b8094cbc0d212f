"""Deliver an edition exactly once per subscriber: plan, reconcile, then claim → send → record.

Each batch is claimed in the ledger (committed) right before its provider call, and its
results are recorded (committed) right after (digest.batch). What a failed call proves
decides what follows (see `transports.base.SendResult`):

- the provider refused it and so accepted nothing (429, 5xx, a refused connection): its
  rows go back to pending and are claimed again, so an unsubscribe that came during the
  wait is honoured, then sent again after a backoff;
- no answer came after the request went out (timeout, connection dropped): the call is
  *in doubt* and is never sent again as is. In strict mode (SendGrid) every call has its
  own provider batch scheduled `strict_lead` ahead, so the batch is cancelled and its rows
  sent again under a new one: no duplicate, nothing missing. Otherwise its rows become
  `failed` with the IN_DOUBT reason at once; `retry_failed` sends them again, accepting
  that some may then arrive twice;
- the provider refused the account (401, 403): the run stops at once, rows stay pending.

A crash leaves at most the batches in flight in `sending`; the next run settles them the
same way (`batch.reconcile`) before sending anything else.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from digest import compose
from digest.batch import claim, reconcile, settle
from digest.bulk import bulk_gc
from digest.cancel import Scheduler, Withdrawer
from digest.compose import ContentCache, Renderer
from digest.config import Config
from digest.editions import Edition
from digest.errors import UsageError
from digest.experiments.assign import Assign, edition_assigner, variants_of
from digest.ledger import Ledger
from digest.lifecycle import check_sendable
from digest.retry import RetryPolicy, Uniform, call_transport
from digest.tokens import LinkSigner
from digest.transports.base import OutgoingEmail, SendResult, Transport

SEND_AT_LIMIT = timedelta(hours=72)


@dataclass(frozen=True)
class SendOptions:
    """How to run a send; the defaults deliver now, in the configured batch size.

    The audience is planned by the first send only; `include_new` plans again, adding
    subscribers who joined since. `moments(zone)` gives newly planned rows the moment of
    their subscriber's zone (local-time delivery) and `due` sends only rows whose moment
    has come by then. `should_stop` is asked before each batch: when it says so, the run
    ends after settling the batch in flight (a SIGTERM, or a cancel from elsewhere).
    """

    batch_size: int = 500
    retry_failed: bool = False
    strict: bool = False
    send_at: datetime | None = None
    include_new: bool = False
    due: datetime | None = None
    moments: Callable[[str], datetime] | None = None
    should_stop: Callable[[], bool] | None = None


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
    in_doubt: int = 0  # rows of calls whose answer never came (this run and crashed ones)
    withdrawn: int = 0  # provider batches cancelled so their rows could be sent again
    stopped: bool = False  # should_stop ended the run early; the rest is still pending

    def line(self) -> str:
        text = (
            f"sent {self.sent}, skipped {self.skipped}, "
            f"suppressed {self.suppressed}, failed {self.failed}"
        )
        if self.in_doubt or self.withdrawn:
            text += f" (in doubt {self.in_doubt}, batches cancelled and resent {self.withdrawn})"
        return text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["failures"] = [{"reason": r, "count": n} for r, n in self.failures]
        return out


Progress = Callable[[int, int], None]  # (rows done, rows to do)


@dataclass
class Run:
    """The fixed inputs of one send, and its running counts, passed between the loop's steps."""

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
    todo: int = 0  # rows pending once prepared
    sent: int = 0
    done: int = 0
    in_doubt: int = 0
    withdrawn: int = 0
    failed_in_a_row: int = 0
    stopped: bool = False

    @property
    def in_flight(self) -> int:
        """Calls at once: the configured number where the transport takes concurrent calls."""
        if getattr(self.transport, "concurrent", False):
            return self.config.delivery.in_flight
        return 1

    @property
    def scheduler(self) -> Scheduler | None:
        return self.transport if isinstance(self.transport, Scheduler) else None

    def withdrawer(self) -> Withdrawer:
        assert self.scheduler is not None
        return Withdrawer(self.edition.key, self.ledger, self.scheduler, self.now, self.sleep)


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

    Refuses an edition that is not approved when its digest requires approval, and one
    skipped or cancelled. The audience is planned once, by the first send. Holds the
    edition's lock for the whole run (a second send, a rebuild or an edit of the edition
    fails at once meanwhile) and checks the store still has `edition` as given. Every
    distinct content is rendered before the first row is planned, so a template error
    leaves the ledger untouched. Safe to run again at any time: rows already sent are
    skipped, rows a crash left in doubt are reconciled first. `assign` plans rows
    (content key, variant); by default the digest's A/B test group, or everyone as
    variant A (see digest.experiments.assign).
    """
    started = clock()
    options = options or SendOptions(batch_size=config.delivery.batch_size)
    check_options(options, transport, now())
    check_sendable(edition, config.digest(edition.digest))
    with ledger.holding(edition), bulk_gc():
        run = open_run(
            edition, config=config, ledger=ledger, transport=transport, secret=secret,
            now=now, options=options, render=render, sleep=sleep, rng=rng,
        )  # fmt: skip
        key = edition.key
        skipped = prepare(run, assign)
        _send_pending(run, progress, run.todo)
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
        in_doubt=run.in_doubt,
        withdrawn=run.withdrawn,
        stopped=run.stopped,
    )


def open_run(
    edition: Edition,
    *,
    config: Config,
    ledger: Ledger,
    transport: Transport,
    secret: str,
    now: Callable[[], datetime],
    options: SendOptions,
    render: Renderer | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: Uniform | None = None,
) -> Run:
    """The state of one send (or of one worker's batch: digest.workers), before any write."""
    return Run(
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


def prepare(run: Run, assign: Assign | None = None) -> int:
    """Everything before the first batch, under the edition's lock: render every content,
    plan the audience (once), reconcile what a crash left in `sending`, requeue failed rows
    if asked, suppress rows of subscribers who left (the last three only when the edition
    had rows before this run). Returns the rows sent before."""
    ledger, edition, options, now = run.ledger, run.edition, run.options, run.now
    key = edition.key
    _render_all(run, variants_of(run.config, edition))
    fixed = ledger.audience_fixed(key)
    if options.include_new or not fixed:
        first = run.config.digests[0].key == edition.digest
        planner = assign or edition_assigner(run.config, edition)
        moment = options.moments
        added = ledger.plan(key, planner, now=now(), digest=(edition.digest, first), moment=moment)
        ledger.fix_audience(key, now=now())
        if added == ledger.total(key):
            # Every row was planned just now, from active subscribers: nothing is in doubt,
            # failed or sent, and each claim still checks its subscriber is active.
            run.todo = added
            return 0
    if options.moments is not None and fixed:  # rows an earlier run planned without a moment
        ledger.stamp_send_after(key, options.moments, now=now())
    run.in_doubt += reconcile(run)
    if options.retry_failed:
        ledger.retry_failed(key, now=now())
    counts = ledger.counts(key)
    run.todo = counts["pending"] - ledger.suppress_inactive(key, now=now())
    return counts["sent"]


def _render_all(run: Run, variants: Sequence[str]) -> None:
    """Render every content the audience and the ledger may need (each topic mix of the
    audience in each variant), before anything is written."""
    keys = set(run.ledger.content_keys(run.edition.key))
    topics = run.edition.topics()
    for mine in run.ledger.audience_topics():
        keys.update(compose.content_key(mine, topics, v) for v in variants)
    for key in sorted(keys - {""}):
        run.cache.get(key)


def check_options(options: SendOptions, transport: Transport, now: datetime) -> None:
    """Refuse options no send could honour, before anything is written."""
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
    if options.strict and isinstance(transport, Scheduler):
        window = (transport.strict_lead - transport.cancel_margin).total_seconds()
        if transport.request_timeout >= window:
            raise UsageError(
                f"strict mode: the request timeout ({transport.request_timeout:g} s) must be "
                f"shorter than strict_lead_seconds - cancel_margin_seconds ({window:g} s), "
                "or a call in doubt could no longer be cancelled",
                hint="lower delivery.sendgrid.timeout or raise strict_lead_seconds",
            )


def _send_pending(run: Run, progress: Progress | None, total: int) -> None:
    """Send every pending row, batch by batch: claim (commit) → provider call → record (commit).

    The calls run in worker threads (waiting on the provider releases the GIL) while this
    thread composes the next batch. A batch is claimed only when a call slot is free: with
    `in_flight` = K (transports that take concurrent calls, i.e. SendGrid), at most K
    batches are ever in `sending`, so a crash or a lost answer leaves at most K batches in
    doubt; with K = 1, one. Batches are settled in the order they were claimed.
    """
    if progress is not None:
        progress(0, total)
    slots = run.in_flight
    calls: deque[tuple[OutgoingEmail, Future[list[SendResult]], int]] = deque()
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="digest-send") as worker:
        try:
            for email in _composed(run):
                while len(calls) >= slots:
                    _settle_next(run, calls, progress, total)
                if run.options.should_stop is not None and run.options.should_stop():
                    run.stopped = True
                    break
                claimed = claim(run, email)
                if claimed is None:
                    run.done += len(email.recipients)
                    continue
                future = worker.submit(call_transport, run.transport, claimed)
                calls.append((claimed, future, len(email.recipients)))
            while calls:
                _settle_next(run, calls, progress, total)
        except BaseException:
            _drain(run, calls)  # every call made is recorded, whatever stopped the run
            raise


def _settle_next(
    run: Run,
    calls: deque[tuple[OutgoingEmail, Future[list[SendResult]], int]],
    progress: Progress | None,
    total: int,
) -> None:
    email, future, size = calls.popleft()
    settle(run, email, future.result())
    run.done += size
    if progress is not None:
        progress(min(run.done, total), total)


def _drain(run: Run, calls: deque[tuple[OutgoingEmail, Future[list[SendResult]], int]]) -> None:
    """Settle the calls still in flight when the run stops, without raising again."""
    while calls:
        email, future, _size = calls.popleft()
        try:
            settle(run, email, future.result())
        except Exception:  # noqa: BLE001 - the first error is the one reported
            continue


def _composed(run: Run) -> Iterator[OutgoingEmail]:
    """The pending rows as messages of up to a batch each, one content key at a time; the
    rows are read, not claimed, so composing ahead changes nothing in the ledger."""
    key, size, due = run.edition.key, run.options.batch_size, run.options.due
    for content_key in run.ledger.content_keys(key, due=due):
        after = 0
        while rows := run.ledger.pending(key, content_key, size, after=after, due=due):
            recipients = compose.recipients(rows, links=run.links, edition_key=key)
            content = run.cache.get(content_key)
            yield compose.compose(content, recipients, config=run.config, edition=run.edition)
            if len(rows) < size:
                break
            after = rows[-1].id
