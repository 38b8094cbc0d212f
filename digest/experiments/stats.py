"""The statistics of an A/B test, all from statsmodels and scipy (no hand-rolled formula).

- each rate: a Wilson interval;
- two variants: a pooled two-proportion z test, two-sided, or Fisher's exact test when an
  expected cell of the 2×2 table is under 5; a Newcombe interval for the difference;
- three or four: a χ² test across all variants first; then the leader must beat every
  other variant, pairwise as above, with Holm's correction;
- the sample per variant that would detect the observed gap (80 % power).

The verdict is `too_small` while any variant's denominator is under `min_sample`, else
`winner` or `no_significant_difference`; never "the highest rate anyway".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2_contingency, fisher_exact
from scipy.stats.contingency import expected_freq
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
    samplesize_proportions_2indep_onetail,
)

TOO_SMALL, WINNER, NO_DIFFERENCE = "too_small", "winner", "no_significant_difference"
Z_TEST, FISHER = "z", "fisher"
POWER = 0.8
MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class Arm:
    """One variant's successes over its denominator."""

    key: str
    successes: int
    trials: int

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None


@dataclass(frozen=True)
class Comparison:
    """`variant` (the leader) against `baseline`: diff = rate(variant) − rate(baseline)."""

    variant: str
    baseline: str
    diff: float | None
    ci_diff: tuple[float, float] | None
    p_value: float | None  # Holm-adjusted when three or more variants
    test: str  # "z" or "fisher", "+holm" when adjusted


@dataclass(frozen=True)
class Analysis:
    arms: tuple[Arm, ...]
    intervals: dict[str, tuple[float, float] | None]
    comparisons: tuple[Comparison, ...]
    leader: str
    verdict: str
    winner: str | None
    alpha: float
    min_sample: int
    omnibus_p: float | None  # χ² across variants, three or more only
    needed: int | None  # delivered per variant to detect the observed gap; None if no gap


def wilson(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float] | None:
    if trials <= 0:
        return None
    lo, hi = proportion_confint(successes, trials, alpha=alpha, method="wilson")
    return float(lo), float(hi)


def two_proportions(a: Arm, b: Arm, alpha: float = 0.05) -> Comparison:
    """`a` against `b`: the z test (Fisher's when an expected cell is < 5), Newcombe's CI."""
    if a.trials <= 0 or b.trials <= 0:
        return Comparison(a.key, b.key, None, None, None, Z_TEST)
    table = np.array([[a.successes, a.trials - a.successes], [b.successes, b.trials - b.successes]])
    if expected_freq(table).min() < MIN_EXPECTED:
        _odds, p = fisher_exact(table, alternative="two-sided")
        test = FISHER
    else:
        _z, p = proportions_ztest([a.successes, b.successes], [a.trials, b.trials])
        test = Z_TEST
    lo, hi = confint_proportions_2indep(
        a.successes, a.trials, b.successes, b.trials,
        method="newcomb", compare="diff", alpha=alpha,
    )  # fmt: skip
    diff = a.successes / a.trials - b.successes / b.trials
    return Comparison(a.key, b.key, diff, (float(lo), float(hi)), float(p), test)


def chi_square(arms: Sequence[Arm]) -> float:
    """p of the χ² test of independence across the variants (no continuity correction)."""
    table = np.array([[a.successes, a.trials - a.successes] for a in arms])
    if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return 1.0  # nobody (or everybody) succeeded anywhere: nothing differs
    return float(chi2_contingency(table, correction=False).pvalue)


def needed_sample(p1: float, p2: float, alpha: float) -> int | None:
    """Delivered per variant for an 80 %-power two-sided test of p1 against p2."""
    if p1 == p2:
        return None
    n = samplesize_proportions_2indep_onetail(
        p1 - p2, p2, POWER, ratio=1.0, alpha=alpha, alternative="two-sided"
    )
    return math.ceil(float(n))


def analyse(arms: Sequence[Arm], *, alpha: float, min_sample: int) -> Analysis:
    """The intervals, the leader's comparisons and the verdict (see the module doc)."""
    if len(arms) < 2:
        raise ValueError("an A/B test needs at least two variants")
    leader = max(arms, key=lambda a: a.rate if a.rate is not None else -1.0)
    others = [a for a in arms if a.key != leader.key]
    raw = [two_proportions(leader, other, alpha) for other in others]
    omnibus = None
    if len(arms) == 2:
        comparisons = raw
        significant = raw[0].p_value is not None and raw[0].p_value < alpha
    else:
        omnibus = chi_square(arms)
        comparisons, all_rejected = _holm(raw, alpha)
        significant = omnibus < alpha and all_rejected
    too_small = any(a.trials < min_sample for a in arms)
    verdict = TOO_SMALL if too_small else WINNER if significant else NO_DIFFERENCE
    runner_up = max(others, key=lambda a: a.rate if a.rate is not None else -1.0)
    needed = None
    if leader.rate is not None and runner_up.rate is not None:
        needed = needed_sample(leader.rate, runner_up.rate, alpha / len(others))
    return Analysis(
        arms=tuple(arms),
        intervals={a.key: wilson(a.successes, a.trials, alpha) for a in arms},
        comparisons=tuple(comparisons),
        leader=leader.key,
        verdict=verdict,
        winner=leader.key if verdict == WINNER else None,
        alpha=alpha,
        min_sample=min_sample,
        omnibus_p=omnibus,
        needed=needed,
    )


def _holm(raw: Sequence[Comparison], alpha: float) -> tuple[list[Comparison], bool]:
    """Holm-adjusted p values of the leader's comparisons, and whether all are rejected."""
    if any(c.p_value is None for c in raw):
        return list(raw), False
    reject, adjusted, _s, _b = multipletests([c.p_value for c in raw], alpha=alpha, method="holm")
    out = [
        Comparison(c.variant, c.baseline, c.diff, c.ci_diff, float(p), c.test + "+holm")
        for c, p in zip(raw, adjusted, strict=True)
    ]
    return out, bool(all(reject))
