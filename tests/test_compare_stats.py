"""The comparison statistics on hand-computed cases (t quantiles from printed tables)."""
import math

import numpy as np
import pytest
from scipy import stats

from utils.compare.stats import mean_ci, power, seeds_needed, verdict, welch

A = [0.40, 0.42, 0.44]  # mean 0.42, std 0.02
B = [0.45, 0.50, 0.55]  # mean 0.50, std 0.05


def test_mean_ci_by_hand():
    ci = mean_ci(A)
    # t(0.975, 2) = 4.303 (tables); half width 4.303 * 0.02 / sqrt(3) = 0.04968
    assert (ci.n, ci.mean, ci.std) == (3, pytest.approx(0.42), pytest.approx(0.02))
    assert (ci.low, ci.high) == (pytest.approx(0.42 - 0.04968, abs=2e-5), pytest.approx(0.42 + 0.04968, abs=2e-5))
    one = mean_ci([0.3])
    assert one.mean == 0.3 and math.isnan(one.std) and math.isnan(one.low)


def test_welch_by_hand_and_against_scipy():
    d = welch(A, B)
    # se^2 = 0.02^2/3 + 0.05^2/3 = 9.6667e-4; df = se^4 / ((0.02^2/3)^2/2 + (0.05^2/3)^2/2) = 2.624
    assert d.diff == pytest.approx(0.08) and d.df == pytest.approx(2.624, abs=1e-3)
    t = 0.08 / math.sqrt(9.6667e-4)
    assert d.p == pytest.approx(2 * stats.t.sf(t, 2.624), rel=1e-3)
    ref = stats.ttest_ind(B, A, equal_var=False)
    assert d.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert (d.low, d.high) == (pytest.approx(ref.confidence_interval(0.95).low, rel=1e-9),
                               pytest.approx(ref.confidence_interval(0.95).high, rel=1e-9))
    same = welch([0.5, 0.5], [0.6, 0.6])  # no spread at all: an exact difference
    assert (same.diff, same.p) == (pytest.approx(0.1), 0.0)


def test_seeds_needed_matches_published_power_tables():
    # two-sample t-test, alpha 0.05 two-sided, power 0.8: n per group 17 / 26 / 64 for effect sizes
    # d = 1.0 / 0.8 / 0.5 (Cohen 1988, Table 2.4.1; G*Power gives the same)
    assert [seeds_needed(d, 1.0, 1.0) for d in (1.0, 0.8, 0.5)] == [17, 26, 64]
    assert seeds_needed(-0.03, 0.02, 0.02) == seeds_needed(0.03, 0.02, 0.02) == 9
    assert seeds_needed(0.5, 0.01, 0.01) == 2 and seeds_needed(0.0, 0.02, 0.02) == 10_000


def test_power_against_simulation():
    """Power of Welch's test by simulation: 4000 repetitions of 17 vs 17 normal draws, d = 1."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (4000, 17)), rng.normal(1, 1, (4000, 17))
    simulated = (stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05).mean()
    assert power(1.0, 1.0, 1.0, 17) == pytest.approx(simulated, abs=0.02)
    a, b = rng.normal(0, 0.026, (4000, 5)), rng.normal(0.03, 0.015, (4000, 5))  # the stds
    simulated = (stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05).mean()
    assert power(0.03, 0.026, 0.015, 5) == pytest.approx(simulated, abs=0.03)


def test_verdicts():
    # p = 0.087 at n = 3; Welch's power at these stds reaches 0.8 at 6 seeds
    assert power(0.08, 0.02, 0.05, 5) < 0.8 <= power(0.08, 0.02, 0.05, 6)
    assert verdict(A, B) == ("not resolved (3 seeds each; about 6 seeds per strategy in all (3 more) would resolve a "
                              "difference this size)")
    assert verdict([0.40, 0.41, 0.42, 0.40], [0.50, 0.51, 0.49, 0.50]) == "better"
    assert verdict([0.50, 0.51, 0.49, 0.50], [0.40, 0.41, 0.42, 0.40]) == "worse"
    assert verdict([0.4], [0.5, 0.6]).startswith("not resolved (1 seed of a, 2 of b; at least 2 seeds")
    assert verdict([0.40, 0.44], [0.41, 0.43]).endswith("more than 1000 seeds per strategy would be needed for a difference this size)")
