"""`digest run-due`: do what the schedules say is due now, once, then return.

For each scheduled send whose build time has come: build the edition, test-send it to
`schedule.test_to`, and when its send time comes start sending it (approved, or approved
automatically when the digest does not require approval). Each step is recorded in the
store before it is reported, so running again (every minute from cron, or two copies at
once: a lock in the store lets one through) never does a step twice. A send missed while
nothing ran is caught up when the next run comes within `schedule.grace`; later, it is
recorded and reported as missed, never sent. Editions already sending are continued:
local-time rows go when their zone's moment comes (SendGrid: up to an hour ahead, with
`send_at`); rows whose moment passed more than the grace ago become failed, "missed".
Every delivery goes through `send.send_edition` and its ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from digest import lifecycle, schedule, select
from digest.cancel import Scheduler
from digest.config import Config, Digest
from digest.dispatch import finish
from digest.editions import Edition
from digest.errors import DigestError, UsageError
from digest.lifecycle import APPROVED, CANCELLED, SCHEDULED, SENDABLE, SENDING, SENT, SKIPPED
from digest.proof import test_send
from digest.send import SendOptions, send_edition
from digest.store import Store
from digest.store.locks import run_lock
from digest.subscribers import Subscriber
from digest.transports.base import Transport

LOOKBACK = timedelta(days=35)  # a run after a longer outage reports no further back
MARK_STEP = timedelta(hours=6)
AHEAD = timedelta(hours=1)  # SendGrid: local-time groups go this early, with send_at
MISSED = "missed: its local send time passed more than schedule.grace ago"

MakeTransport = Callable[[Edition], Transport]


class Delivered(Protocol):
    """What a run reports of a send (send.SendSummary, or taskqueue.Queued when deferred)."""

    @property
    def stopped(self) -> bool: ...
    def line(self) -> str: ...


# send.send_edition's keywords; taskqueue.Queue.deliver defers the batches to workers instead
Deliver = Callable[..., Delivered]


@dataclass(frozen=True)
class Action:
    """One thing a run did (or, in a dry run, would do)."""

    at: datetime
    edition: str
    step: str  # build | test | schedule | send | missed | wait | error
    detail: str

    def line(self) -> str:
        at = self.at.isoformat(timespec="minutes")
        return f"{at}  {self.edition}  {self.step}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"at": self.at.isoformat(), "edition": self.edition, "step": self.step,
                "detail": self.detail}  # fmt: skip


@dataclass
class Runner:
    """What a run needs from the outside world; `make_transport` is called per edition."""

    config: Config
    store: Store
    make_transport: MakeTransport
    secret: str
    now: Callable[[], datetime]
    dry_run: bool = False
    only: str | None = None  # one digest's key: the others are left alone
    should_stop: Callable[[], bool] = lambda: False
    sleep: Callable[[float], None] = time.sleep
    deliver: Deliver = send_edition
    actions: list[Action] = field(default_factory=list)
    errors: int = 0

    def report(self, edition: str, step: str, detail: str) -> None:
        self.actions.append(Action(self.now(), edition, step, detail))

    def failed(self, edition: str, exc: DigestError) -> None:
        """A step that failed: reported, counted (the command exits 1), the run goes on."""
        self.errors += 1
        self.report(edition, "error", str(exc))


def run_due(runner: Runner) -> list[Action]:
    """Do every step that is due at `runner.now()` once; returns what was done.

    Holds the store's run-due lock: a second copy started meanwhile returns at once with
    nothing done (a LockedError the command reports as a note, exit 0).
    """
    with run_lock(runner.store.engine, "run-due", what="digest run-due"):
        for digest in runner.config.digests:
            wanted = runner.only in (None, digest.key) and digest.schedule.cron is not None
            if wanted and not runner.should_stop():
                _due_steps(runner, digest)
        for key in runner.store.schedules.keys_in([SENDING]):
            if runner.only in (None, key.split("/")[0]) and not runner.should_stop():
                _continue(runner, key)
        samples = _sample_tests(runner)  # the only digests whose sent editions need a look
        for key in runner.store.schedules.keys_in([SENT]):
            if key.split("/")[0] in samples and not runner.should_stop():
                _winner(runner, key)
    return runner.actions


def _sample_tests(runner: Runner) -> set[str]:
    """The digests (as configured now, `runner.only` among them) whose A/B test sends to
    a sample first, then its winner to the rest. Every other sent edition is left unread:
    a run-due's work does not grow with the editions sent over the years, and an edition
    of a digest since removed from digest.yaml is no error."""
    return {
        d.key
        for d in runner.config.digests
        if runner.only in (None, d.key) and d.experiment and d.experiment.test_share < 1
    }


def _winner(runner: Runner, key: str) -> None:
    """After an A/B test's wait, send the decided variant to the rest of the list, once.

    Only for scheduled sends of a digest whose experiment tests a sample (test_share < 1:
    `_sample_tests`).
    The decision itself is taken once, by `experiments.winner.decide`, at the first call
    after the wait; before that there is nothing to do yet.
    """
    from digest.experiments.winner import send_winner

    due = runner.store.schedules.due_of(key)
    if due is None:  # not a scheduled send
        return
    done = runner.store.schedules.steps(key.split("/")[0], due - timedelta(seconds=1))
    edition = None if "winner" in done.get(due, {}) else runner.store.editions.get(key)
    if edition is None:
        return
    digest = runner.config.digest(edition.digest)
    if runner.dry_run:
        runner.report(key, "winner", "would send the decided variant to the rest, once due")
        return
    transport = runner.make_transport(edition)
    try:
        result = send_winner(
            edition,
            config=runner.config,
            experiments=runner.store.experiments,
            ledger=runner.store.deliveries,
            transport=transport,
            secret=runner.secret,
            now=runner.now,
            sleep=runner.sleep,
        )
    except UsageError:
        return  # the test is still running: its decision is taken at the end of the wait
    except DigestError as exc:
        runner.failed(key, exc)
        return
    finally:
        transport.close()
    occ = schedule.occurrence(runner.config, digest, due)
    if result.summary.pending == 0 and _record(
        runner, occ, "winner", "done", result.decision.variant
    ):
        detail = f"variant {result.decision.variant} ({result.decision.verdict}): "
        runner.report(key, "winner", detail + result.summary.line())


def _due_steps(runner: Runner, digest: Digest) -> None:
    now, store = runner.now(), runner.store.schedules
    grace = digest.schedule.grace_period
    mark = store.checked_to(digest.key)
    # Sends whose build time has come and whose grace had not passed at the last mark.
    ahead = digest.schedule.lead
    if digest.schedule.local_time:  # sending starts up to a day before the cron time
        ahead += schedule.LOCAL_SPAN
    after = max((mark or now) - grace - ahead, now - LOOKBACK)
    recorded = store.steps(digest.key, after)
    for occ in schedule.occurrences(runner.config, digest, after, now + ahead):
        if occ.build_at > now or runner.should_stop():
            continue
        steps = recorded.get(occ.due.astimezone(UTC), {})
        if "send" in steps:
            continue
        if now > occ.send_at + grace:
            _missed(runner, occ, first_run=mark is None)
            continue
        try:
            _occurrence(runner, digest, occ, steps)
        except DigestError as exc:
            runner.failed(occ.edition_key, exc)
    # The mark only bounds how far back the next run looks, so it moves in steps.
    if not runner.dry_run and (mark is None or now - mark >= MARK_STEP):
        store.set_checked_to(digest.key, now)


def _missed(runner: Runner, occ: schedule.Occurrence, *, first_run: bool) -> None:
    """A send whose grace passed before any run came: recorded, reported, never sent.
    On a digest's very first run, sends from before are recorded quietly."""
    when = occ.send_at.isoformat(timespec="minutes")
    note = f"the send due at {when} was not started within schedule.grace; skipped"
    if first_run:
        note = f"due at {when}, before the schedule was first run"
    if runner.dry_run:
        if not first_run:
            runner.report(occ.edition_key, "missed", note)
        return
    recorded = runner.store.schedules.record_step(
        occ.digest, occ.due, "send", "skipped" if first_run else "missed",
        edition_key=occ.edition_key, note=note,
        now=runner.now(),
    )  # fmt: skip
    if recorded and not first_run:
        runner.report(occ.edition_key, "missed", note)


def _occurrence(
    runner: Runner, digest: Digest, occ: schedule.Occurrence, steps: dict[str, str]
) -> None:
    key, now = occ.edition_key, runner.now()
    if "build" not in steps:
        if runner.dry_run:
            runner.report(key, "build", "would build the edition")
        else:
            _build(runner, digest, occ)
    edition = runner.store.editions.get(key)
    if edition is not None and edition.status == SKIPPED:
        _record(runner, occ, "send", "skipped", edition.notes[-1] if edition.notes else SKIPPED)
        return
    if digest.schedule.test_to and "test" not in steps:
        if runner.dry_run:
            runner.report(key, "test", f"would test-send to {', '.join(digest.schedule.test_to)}")
        elif edition is not None:
            _test(runner, digest, occ, edition)
    if now < occ.send_at:
        if edition is not None and edition.status == APPROVED and not runner.dry_run:
            when = occ.send_at.isoformat(timespec="minutes")
            note = f"sends at {when}"
            if lifecycle.move(runner.store.schedules, edition, SCHEDULED, note=note, now=now):
                runner.report(key, "schedule", note)
        return
    if runner.dry_run:
        runner.report(key, "send", "would start sending (if approved)")
        return
    if edition is not None:
        _start(runner, digest, occ, edition)


def _build(runner: Runner, digest: Digest, occ: schedule.Occurrence) -> None:
    edition = runner.store.editions.get(occ.edition_key)
    if edition is None:
        edition = select.select_edition(
            runner.config, runner.store, digest.key, occ.period, now=runner.now()
        )
        detail = f"built: {len(edition.items)} articles ({edition.status})"
    else:
        detail = f"already built ({edition.status})"
    if _record(runner, occ, "build", "done", detail):
        runner.report(occ.edition_key, "build", detail)
        if edition.status == SKIPPED:
            runner.report(occ.edition_key, "skip", edition.notes[-1])


def _test(runner: Runner, digest: Digest, occ: schedule.Occurrence, edition: Edition) -> None:
    to = digest.schedule.test_to
    reader = Subscriber(email=to[0], name="Editor", topics=tuple(edition.topics()))
    transport = runner.make_transport(edition)
    try:
        results = test_send(
            edition, reader, to, config=runner.config, transport=transport, secret=runner.secret
        )
    finally:
        transport.close()
    failed = [r.error for r in results if not r.ok]
    outcome, detail = ("failed", f"test send failed: {failed[0]}") if failed else (
        "done", f"test-sent to {', '.join(to)}")  # fmt: skip
    if _record(runner, occ, "test", outcome, detail):
        runner.report(edition.key, "test", detail)
        if not failed:
            note = f"test send to {', '.join(to)}"
            lifecycle.move(runner.store.schedules, edition, lifecycle.TEST_SENT, note=note,
                           now=runner.now())  # fmt: skip


def _start(runner: Runner, digest: Digest, occ: schedule.Occurrence, edition: Edition) -> None:
    """Start the scheduled send: approved (or approval not required) → sending."""
    key, now, states = edition.key, runner.now(), runner.store.schedules
    if edition.status in (CANCELLED, SKIPPED):
        _record(runner, occ, "send", "skipped", f"edition {edition.status}")
        runner.report(key, "send", f"not sent: the edition is {edition.status}")
        return
    if edition.status not in SENDABLE:
        if digest.schedule.require_approval:
            until = (occ.send_at + digest.schedule.grace_period).isoformat(timespec="minutes")
            runner.report(key, "wait", f"not approved yet; waiting until {until}")
            return
        note = "approved automatically (schedule.require_approval is false)"
        lifecycle.move(states, edition, APPROVED, note=note, now=now)
    if edition.status != SENDING:
        note = f"scheduled send due at {occ.due.isoformat(timespec='minutes')}"
        lifecycle.move(states, edition, SENDING, note=note, now=now)
    if _record(runner, occ, "send", "done", "started"):
        runner.report(key, "send", "started")


def _record(runner: Runner, occ: schedule.Occurrence, step: str, outcome: str, note: str) -> bool:
    return runner.store.schedules.record_step(
        occ.digest, occ.due, step, outcome, edition_key=occ.edition_key, note=note,
        now=runner.now(),
    )  # fmt: skip


def _continue(runner: Runner, key: str) -> None:
    """Send what is due of an edition in `sending`; mark it sent once nothing is left."""
    edition = runner.store.editions.get(key)
    if edition is None or edition.status != SENDING:
        return
    digest = runner.config.digest(edition.digest)
    due_at = runner.store.schedules.due_of(key)
    occ = None if due_at is None else schedule.occurrence(runner.config, digest, due_at)
    local = occ is not None and occ.local_time
    now, states = runner.now(), runner.store.schedules
    if runner.dry_run:
        runner.report(key, "send", f"would send what is due ({states.unsent(key)} left)")
        return
    if local:
        late = states.fail_late(key, now - digest.schedule.grace_period, MISSED, now=now)
        if late:
            runner.report(key, "missed", f"{late} deliveries: {MISSED}")
    transport = runner.make_transport(edition)
    try:
        moments = states.moments(key)
        first = moments[0] if moments else None
        if not runner.store.deliveries.audience_fixed(key) or (
            moments and (first is None or first <= now)
        ):
            summary = _send(runner, edition, occ, transport, due=now if local else None)
            stopped = " (stopped)" if summary.stopped else ""
            runner.report(key, "send", summary.line() + stopped)
        if local and isinstance(transport, Scheduler):
            for moment in states.moments(key):
                if moment is None or not now < moment <= now + AHEAD or runner.should_stop():
                    continue
                summary = _send(runner, edition, occ, transport, due=moment, send_at=moment)
                at = moment.isoformat(timespec="minutes")
                runner.report(key, "send", f"{summary.line()}, delivered by SendGrid at {at}")
    except DigestError as exc:
        runner.failed(key, exc)
        return
    finally:
        transport.close()
    if finish(runner.store, edition, now=runner.now()):
        runner.report(key, "sent", "every delivery settled")


def _send(
    runner: Runner,
    edition: Edition,
    occ: schedule.Occurrence | None,
    transport: Transport,
    *,
    due: datetime | None,
    send_at: datetime | None = None,
) -> Delivered:
    states = runner.store.schedules

    def stop() -> bool:
        return runner.should_stop() or states.state(edition.key) == CANCELLED

    options = SendOptions(
        batch_size=runner.config.delivery.batch_size,
        due=due,
        send_at=send_at,
        moments=occ.moment if occ is not None and occ.local_time else None,
        should_stop=stop,
    )
    return runner.deliver(
        edition,
        config=runner.config,
        ledger=runner.store.deliveries,
        transport=transport,
        secret=runner.secret,
        now=runner.now,
        options=options,
        sleep=runner.sleep,
    )
