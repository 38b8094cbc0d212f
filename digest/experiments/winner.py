"""The decision and the winner's send: decided once at the end of the wait, sent once.

Peeking is not a test: looking at a fixed-horizon test until it looks significant raises
false winners several-fold. So the rule decides exactly once, the first time it is asked
after the wait, and stores its decision; every later call (a resumed send, a re-run of
the scheduler) reads that decision back. A person may decide instead (`pick`) until then.
With no significant winner the rest gets the configured default variant, never "the
highest rate anyway".

The rest of the list goes out through `send.send_edition`, on the same ledger as the
test: one row per (edition, subscriber), so nobody who got a test variant gets the winner
too, and a crash mid-send resumes without sending anyone twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from digest import send as sending
from digest.config import Config
from digest.editions import Edition
from digest.errors import UsageError
from digest.experiments import stats
from digest.experiments.assign import rest_assigner
from digest.experiments.ledger import Decision, ExperimentLedger
from digest.experiments.report import build_report, experiment_of
from digest.ledger import Ledger
from digest.transports.base import Transport


@dataclass(frozen=True)
class WinnerSend:
    decision: Decision
    summary: sending.SendSummary


def decide(
    config: Config, ledger: ExperimentLedger, edition: Edition, *, now: datetime
) -> Decision:
    """The edition's decision: the stored one, or the rule's, taken now if the wait is over.

    UsageError while the test is unsent or still running: there is nothing to decide yet.
    """
    found = ledger.decision(edition.key)
    if found is not None:
        return found
    report = build_report(config, ledger, edition.digest, edition.key, now=now)
    if report.ends_at is None:
        raise UsageError(
            f"the test of {edition.key} has not been sent",
            hint=f"digest send {edition.digest} --week {edition.period}",
        )
    if now < report.ends_at:
        raise UsageError(
            f"the test of {edition.key} runs until {report.ends_at.isoformat()}: the decision "
            "is taken once, at the end of the wait",
            hint=f"digest ab report {edition.digest} --week {edition.period} shows interim "
            f"figures; digest ab pick decides now by hand",
        )
    analysis = report.analysis
    variant = analysis.winner if analysis.verdict == stats.WINNER else None
    return ledger.save_decision(
        Decision(
            edition_key=edition.key,
            verdict=analysis.verdict,
            winner=analysis.winner,
            variant=variant or report.experiment.default_variant,
            decided_by="rule",
            decided_at=now,
            report=report.to_dict(),
        )
    )


def pick(
    config: Config, ledger: ExperimentLedger, edition: Edition, variant: str, *, now: datetime
) -> Decision:
    """A person's decision: `variant` goes to the rest. Refused once a decision exists."""
    experiment = experiment_of(config, edition.digest)
    keys = [v.key for v in experiment.variants]
    if variant not in keys:
        raise UsageError(f"no variant {variant!r} in {edition.digest} (known: {', '.join(keys)})")
    found = ledger.decision(edition.key)
    if found is not None:
        raise UsageError(
            f"{edition.key} was already decided ({found.decided_by}, "
            f"{found.decided_at.isoformat()}): the rest gets {found.variant}"
        )
    report = build_report(config, ledger, edition.digest, edition.key, now=now)
    stored = ledger.save_decision(
        Decision(
            edition_key=edition.key,
            verdict=report.analysis.verdict,
            winner=report.analysis.winner,
            variant=variant,
            decided_by="person",
            decided_at=now,
            report=report.to_dict(),
        )
    )
    if stored.decided_by != "person" or stored.variant != variant:
        raise UsageError(f"{edition.key} was decided meanwhile: the rest gets {stored.variant}")
    return stored


def send_winner(
    edition: Edition,
    *,
    config: Config,
    experiments: ExperimentLedger,
    ledger: Ledger,
    transport: Transport,
    secret: str,
    now: Callable[[], datetime],
    options: sending.SendOptions | None = None,
    **send_kwargs: Any,
) -> WinnerSend:
    """Decide (once, see `decide`) and send the chosen variant to the rest of the list.

    Safe to call again at any time, e.g. from a scheduler every few minutes: before the
    end of the wait it raises UsageError and changes nothing; after a crash it resumes
    (the decision is read back, sent rows are skipped). `send_edition` holds the
    edition's lock, as for `digest send`.
    """
    decision = decide(config, experiments, edition, now=now())
    summary = sending.send_edition(
        edition,
        config=config,
        ledger=ledger,
        transport=transport,
        secret=secret,
        now=now,
        # the rest of the list was never planned: the winner's send adds it on purpose
        options=replace(
            options or sending.SendOptions(batch_size=config.delivery.batch_size), include_new=True
        ),  # fmt: skip
        assign=rest_assigner(edition, decision.variant),
        **send_kwargs,
    )
    return WinnerSend(decision, summary)
