"""A/B statistics: equal to scipy/statsmodels computed directly, a real difference is called,
a null one is not (beyond alpha), and assignment splits evenly and never moves anyone."""

from __future__ import annotations

import gc
import hashlib
import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats import proportion as smp
from statsmodels.stats.multitest import multipletests

from digest.experiments import stats
from digest.experiments.assign import position, variant_for
from digest.experiments.stats import Arm, analyse

TOL = 1e-6


def test_wilson_interval_equals_statsmodels() -> None:
    lo, hi = smp.proportion_confint(37, 1200, alpha=0.05, method="wilson")
    assert stats.wilson(37, 1200) == pytest.approx((lo, hi), abs=TOL)
    assert stats.wilson(0, 0) is None


def test_two_variants_use_the_pooled_z_test_and_newcombe_interval() -> None:
    a, b = Arm("A", 412, 10_000), Arm("B", 351, 10_000)
    result = analyse([a, b], alpha=0.05, min_sample=1000)
    (c,) = result.comparisons
    # the pooled z statistic, by the textbook, checked against scipy's normal
    p_pool = (412 + 351) / 20_000
    z = (0.0412 - 0.0351) / math.sqrt(p_pool * (1 - p_pool) * (2 / 10_000))
    assert c.p_value == pytest.approx(2 * sps.norm.sf(abs(z)), abs=TOL)
    assert c.p_value == pytest.approx(smp.proportions_ztest([412, 351], [10_000] * 2)[1], abs=TOL)
    lo, hi = smp.confint_proportions_2indep(412, 10_000, 351, 10_000, method="newcomb")
    assert c.ci_diff == pytest.approx((lo, hi), abs=TOL)
    assert (c.variant, c.baseline, c.test) == ("A", "B", "z")
    assert c.diff == pytest.approx(0.0061, abs=TOL)
    assert result.verdict == "winner" and result.winner == "A"


def test_small_expected_cells_switch_to_fishers_exact_test() -> None:
    result = analyse([Arm("A", 1, 40), Arm("B", 7, 40)], alpha=0.05, min_sample=10)
    (c,) = result.comparisons
    assert c.test == "fisher"
    assert c.p_value == pytest.approx(sps.fisher_exact([[7, 33], [1, 39]])[1], abs=TOL)


def test_three_variants_need_the_chi_square_then_holm_against_each_other() -> None:
    arms = [Arm("A", 300, 8000), Arm("B", 330, 8000), Arm("C", 410, 8000)]
    result = analyse(arms, alpha=0.05, min_sample=1000)
    table = np.array([[a.successes, a.trials - a.successes] for a in arms])
    assert result.omnibus_p == pytest.approx(
        sps.chi2_contingency(table, correction=False).pvalue, abs=TOL
    )
    raw = [smp.proportions_ztest([410, x], [8000, 8000])[1] for x in (300, 330)]
    adjusted = multipletests(raw, alpha=0.05, method="holm")[1]
    assert [c.p_value for c in result.comparisons] == pytest.approx(list(adjusted), abs=TOL)
    assert [c.baseline for c in result.comparisons] == ["A", "B"]
    assert all(c.test == "z+holm" for c in result.comparisons)
    assert result.verdict == "winner" and result.winner == "C"


def test_a_leader_that_beats_only_one_rival_is_not_a_winner() -> None:
    arms = [Arm("A", 300, 8000), Arm("B", 395, 8000), Arm("C", 400, 8000)]
    result = analyse(arms, alpha=0.05, min_sample=1000)
    assert result.omnibus_p is not None and result.omnibus_p < 0.05
    assert result.leader == "C"
    assert result.verdict == "no_significant_difference" and result.winner is None


def test_below_min_sample_the_verdict_is_too_small_whatever_the_gap() -> None:
    result = analyse([Arm("A", 5, 999), Arm("B", 90, 1500)], alpha=0.05, min_sample=1000)
    assert result.verdict == "too_small" and result.winner is None
    assert result.comparisons[0].p_value is not None and result.comparisons[0].p_value < 1e-9


def test_needed_sample_equals_statsmodels_sample_size() -> None:
    result = analyse([Arm("A", 300, 10_000), Arm("B", 330, 10_000)], alpha=0.05, min_sample=100)
    n = smp.samplesize_proportions_2indep_onetail(
        0.033 - 0.030, 0.030, 0.8, ratio=1, alpha=0.05, alternative="two-sided"
    )
    assert result.needed == math.ceil(n)
    assert result.verdict == "no_significant_difference"


def test_no_successes_anywhere_is_no_difference_not_an_error() -> None:
    result = analyse([Arm("A", 0, 2000), Arm("B", 0, 2000), Arm("C", 0, 2000)], alpha=0.05,
                     min_sample=1000)  # fmt: skip
    assert result.verdict == "no_significant_difference" and result.needed is None


def _simulate(rng: np.random.Generator, rates: list[float], n: int) -> list[Arm]:
    return [Arm(k, int(rng.binomial(n, p)), n) for k, p in zip("ABCD", rates, strict=False)]


def test_a_real_difference_at_20000_per_variant_is_called() -> None:
    rng = np.random.default_rng(20261130)
    result = analyse(_simulate(rng, [0.030, 0.036], 20_000), alpha=0.05, min_sample=1000)
    assert result.verdict == "winner" and result.winner == "B"


@pytest.mark.parametrize("rates", [[0.04, 0.04], [0.04, 0.04, 0.04]])
def test_a_null_difference_is_called_in_at_most_5_percent_of_200_seeded_runs(
    rates: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # statsmodels' Holm step runs a full garbage collection per call; the figures are the same
    monkeypatch.setattr(gc, "collect", lambda *_a: 0)
    rng = np.random.default_rng(16)
    called = sum(
        analyse(_simulate(rng, rates, 5000), alpha=0.05, min_sample=1000).verdict == "winner"
        for _ in range(200)
    )
    assert called <= 10, f"{called} false winners in 200 null runs"


def test_a_50_50_split_of_100000_subscribers_is_within_1_percent() -> None:
    counts = {"A": 0, "B": 0}
    for sid in range(1, 100_001):
        variant = variant_for(position("weekly", "weekly/2026-W48", sid), ["A", "B"], 1.0)
        assert variant is not None
        counts[variant] += 1
    assert abs(counts["A"] - 50_000) <= 1000, counts


def test_a_20_percent_test_share_splits_the_sample_evenly_and_leaves_the_rest() -> None:
    keys = ["A", "B", "C", "D"]
    counts = {k: 0 for k in [*keys, "rest"]}
    for sid in range(1, 100_001):
        counts[variant_for(position("s", "weekly/2026-W48", sid), keys, 0.2) or "rest"] += 1
    assert abs(counts["rest"] - 80_000) <= 1000
    assert all(abs(counts[k] - 5000) <= 250 for k in keys), counts


def test_assignment_is_stable_and_differs_between_editions() -> None:
    first = [position("weekly", "weekly/2026-W48", sid) for sid in range(100)]
    assert first == [position("weekly", "weekly/2026-W48", sid) for sid in range(100)]
    other = [position("weekly", "weekly/2026-W49", sid) for sid in range(100)]
    assert first != other


def test_a_position_is_the_keyed_blake2b_of_edition_and_subscriber() -> None:
    """The hash is the stored contract: a resume planned by another version of digest must
    put everyone where the first send did."""
    for seed, sid in (("weekly", 1), ("a seed", 123_456_789), ("x" * 80, 0)):
        digest = hashlib.blake2b(
            f"weekly/2026-W48:{sid}".encode(), key=seed.encode()[:64], digest_size=8
        ).digest()
        assert position(seed, "weekly/2026-W48", sid) == int.from_bytes(digest, "big") / 2**64
