"""An experiment's report: the figures per variant, the statistics, the verdict in plain
words, and where the decision stands (interim, decided by the rule, or picked by a person).

`Report.to_dict()` is the `digest ab report --json` shape; `table()` the terminal one;
digest.experiments.page draws the HTML page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from digest.config import Config, Experiment
from digest.errors import UsageError
from digest.experiments import stats
from digest.experiments.assign import is_test_row
from digest.experiments.ledger import Decision, ExperimentData
from digest.experiments.results import DeliveryFact, Results, count

METRIC_WORDS = {
    "clicks": "click rate (unique clicks over delivered)",
    "human_opens": "human open rate (unique opens, machine opens excluded, over delivered)",
    "opens": "open rate (unique opens over delivered; Apple Mail opens every message)",
    "click_to_open": "click-to-open rate (unique clicks over human opens or clicks)",
}


@dataclass(frozen=True)
class Report:
    edition_key: str
    experiment: Experiment
    results: Results
    analysis: stats.Analysis
    ends_at: datetime | None  # end of the wait; None while the test is not sent
    decision: Decision | None
    now: datetime

    @property
    def metric(self) -> str:
        return self.experiment.metric

    def to_dict(self) -> dict[str, Any]:
        """The --json shape: metric, alpha, min_sample, variants, comparisons, decision."""
        variants: dict[str, Any] = {}
        for arm in self.analysis.arms:
            counts = self.results.variants[arm.key]
            ci = self.analysis.intervals[arm.key]
            variants[arm.key] = {
                "recipients": counts.recipients,
                "delivered": counts.delivered,
                "unique_opens": counts.unique_opens,
                "unique_human_opens": counts.unique_human_opens,
                "unique_clicks": counts.unique_clicks,
                "unsubscribes": counts.unsubscribes,
                "complaints": counts.complaints,
                "bounces": counts.bounces,
                "rate": arm.rate,
                "ci": list(ci) if ci else None,
            }
        comparisons = [
            {
                "variant": c.variant,
                "baseline": c.baseline,
                "diff": c.diff,
                "ci_diff": list(c.ci_diff) if c.ci_diff else None,
                "p_value": c.p_value,
                "test": c.test,
            }
            for c in self.analysis.comparisons
        ]
        verdict, winner = self.analysis.verdict, self.analysis.winner
        if self.decision is not None:
            verdict, winner = self.decision.verdict, self.decision.winner
        return {
            "metric": self.metric,
            "alpha": self.experiment.alpha,
            "min_sample": self.experiment.min_sample,
            "variants": variants,
            "comparisons": comparisons,
            "decision": {"verdict": verdict, "winner": winner},
        }

    def status(self) -> str:
        """Where the decision stands, in one sentence."""
        d = self.decision
        if d is not None:
            who = "picked by a person" if d.decided_by == "person" else "decided by the rule"
            return (
                f"{who} at {_when(d.decided_at)}: the rest of the list gets {d.variant} "
                f"(verdict then: {d.verdict.replace('_', ' ')})."
            )
        if self.ends_at is None:
            return "The test has not been sent yet."
        if self.now < self.ends_at:
            return (
                f"Interim figures: the test runs until {_when(self.ends_at)}. Peeking is not "
                "a test: the decision is taken once, at the end of the wait, whatever these "
                "figures show now."
            )
        return "The wait is over: `digest ab send-winner` takes the decision once and sends it."

    def explanation(self) -> list[str]:
        """The verdict in plain words, and the sample that would settle the observed gap."""
        a, ex = self.analysis, self.experiment
        words = METRIC_WORDS[ex.metric]
        out: list[str] = []
        if a.verdict == stats.TOO_SMALL:
            small = [x for x in a.arms if x.trials < ex.min_sample]
            names = ", ".join(f"{x.key} has {x.trials}" for x in small)
            out.append(
                f"Too small to tell: {names}, under the minimum of {ex.min_sample} per "
                f"variant for the {words}. Rates this early move a lot by chance alone."
            )
        elif a.verdict == stats.WINNER:
            out.append(f"{a.winner} wins on {words}. " + self._gaps())
        else:
            out.append(
                f"No significant difference in {words}: the gaps could well be chance. "
                + self._gaps()
                + f" The default variant {ex.default_variant} goes to the rest of the list,"
                " not the highest rate."
            )
        if a.omnibus_p is not None:
            out.append(
                f"Across all {len(a.arms)} variants, the chi-square test gives p = "
                f"{a.omnibus_p:.3g}; the leader must also beat each other variant after "
                "Holm's correction."
            )
        if a.needed is None:
            out.append("The rates are equal: no sample size would tell them apart.")
        else:
            lead = next(x for x in a.arms if x.key == a.leader)
            out.append(
                f"Telling the leader {lead.key} from the runner-up at the gap seen here would "
                f"take about {a.needed:,} per variant (80 % power, two-sided); "
                f"the smallest variant has {min(x.trials for x in a.arms):,}."
            )
        return out

    def _gaps(self) -> str:
        parts = []
        for c in self.analysis.comparisons:
            if c.diff is None or c.ci_diff is None or c.p_value is None:
                continue
            parts.append(
                f"{c.variant} − {c.baseline}: {_pts(c.diff)} points "
                f"(95 % CI {_pts(c.ci_diff[0])} to {_pts(c.ci_diff[1])}), p = {c.p_value:.3g}"
            )
        return ("; ".join(parts) + f" (alpha {self.analysis.alpha}).") if parts else ""


def _pts(x: float) -> str:
    return f"{x * 100:+.2f}"


def _when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M %Z").strip()


def experiment_of(config: Config, digest_key: str) -> Experiment:
    experiment = config.digest(digest_key).experiment
    if experiment is None:
        raise UsageError(
            f"digest {digest_key!r} has no experiment",
            hint=f"add digests[].experiment for {digest_key} in {config.path.name}",
        )
    return experiment


def build_report(
    config: Config, data: ExperimentData, digest_key: str, edition_key: str, *, now: datetime
) -> Report:
    """The experiment's figures and verdict as of `now`."""
    experiment = experiment_of(config, digest_key)
    keys = [v.key for v in experiment.variants]
    facts = list(data.delivery_facts(edition_key))
    results = count(edition_key, keys, facts, data.event_facts(edition_key))
    arms = [stats.Arm(k, *results.variants[k].metric(experiment.metric)) for k in keys]
    analysis = stats.analyse(arms, alpha=experiment.alpha, min_sample=experiment.min_sample)
    return Report(
        edition_key=edition_key,
        experiment=experiment,
        results=results,
        analysis=analysis,
        ends_at=ends_at(facts, experiment.wait_seconds),
        decision=data.decision(edition_key),
        now=now,
    )


def ends_at(facts: Iterable[DeliveryFact], wait: int) -> datetime | None:
    """The end of the wait: the last test row's send time plus the wait."""
    times = [f.sent_at for f in facts if is_test_row(f.variant) and f.state == "sent" and f.sent_at]
    return max(times) + timedelta(seconds=wait) if times else None


def table(report: Report) -> str:
    """The report for a terminal: one line per variant, the comparisons, the verdict."""
    a = report.analysis
    head = (
        f"{'variant':<8} {'recipients':>10} {'delivered':>9} {'opens':>7} {'human':>7} "
        f"{'clicks':>7} {'unsub':>6} {'spam':>5} {'bounce':>6}  {'rate':>7}  95% CI"
    )
    lines = [f"{report.edition_key}: metric {report.metric}, alpha {a.alpha}", head]
    for arm in a.arms:
        c = report.results.variants[arm.key]
        ci = a.intervals[arm.key]
        rate = f"{arm.rate * 100:6.2f}%" if arm.rate is not None else "      -"
        interval = f"{ci[0] * 100:.2f}–{ci[1] * 100:.2f}%" if ci else "-"
        lines.append(
            f"{arm.key:<8} {c.recipients:>10} {c.delivered:>9} {c.unique_opens:>7} "
            f"{c.unique_human_opens:>7} {c.unique_clicks:>7} {c.unsubscribes:>6} "
            f"{c.complaints:>5} {c.bounces:>6}  {rate}  {interval}"
        )
    for comp in a.comparisons:
        if comp.diff is not None and comp.ci_diff is not None and comp.p_value is not None:
            lines.append(
                f"{comp.variant} vs {comp.baseline}: {_pts(comp.diff)} pts "
                f"[{_pts(comp.ci_diff[0])}, {_pts(comp.ci_diff[1])}], "
                f"p = {comp.p_value:.4g} ({comp.test})"
            )
    lines.append(f"verdict: {a.verdict}" + (f", winner {a.winner}" if a.winner else ""))
    lines.extend(report.explanation())
    lines.append(report.status())
    if report.results.rest:
        lines.append(f"rest of the list: {report.results.rest} rows (not part of the test)")
    return "\n".join(lines)
