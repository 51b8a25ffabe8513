"""Statistics of a comparison: is strategy B's mean mAP different from the baseline's, given the seeds?

Each (strategy, seed) run gives one number (mAP50-95 of its best.pt). Over a strategy's seeds:

- the mean with its 95 % Student-t interval, ``mean ± t(0.975, n-1) · s / sqrt(n)``;
- against the baseline, the difference of means with Welch's interval and two-sided p-value (no equal
  variance assumed: one strategy can be much steadier over seeds than another);
- a verdict: ``better`` / ``worse`` when p < 0.05, else ``not resolved`` with the number of seeds per
  strategy that would resolve a difference of the observed size at the observed stds.

The seeds estimate is the sample size of Welch's test at alpha 0.05 (two-sided) and power 0.8: the
fewest seeds per strategy at which a true difference of the observed size, at the observed stds,
reaches p < 0.05 in 80 % of repetitions (noncentral t). It is "about": the stds it uses are
themselves estimated from few seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values, their sample std (ddof 1) and the 95 % t interval of the mean.

    With one value the std and the interval are NaN (nothing is known about the spread)."""
    n: int
    mean: float
    std: float
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """Mean of B minus mean of A with Welch's 95 % interval, two-sided p and degrees of freedom."""
    diff: float
    low: float
    high: float
    p: float
    df: float


def mean_ci(values: Sequence[float], alpha: float = ALPHA) -> MeanCI:
    """Mean, std and the (1 - alpha) Student-t interval of the mean of ``values`` (n >= 1)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return MeanCI(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(1 - alpha / 2, n - 1) * std / math.sqrt(n)
    return MeanCI(n, mean, std, mean - half, mean + half)


def welch(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> Difference:
    """Welch's t-test of mean(b) - mean(a): the difference, its (1 - alpha) interval and two-sided p.

    Both sides need n >= 2. When both are constant (zero std) the difference is exact: p = 0 if the
    means differ, else 1, and the interval is the difference itself."""
    ma, mb = mean_ci(a), mean_ci(b)
    if ma.n < 2 or mb.n < 2:
        raise ValueError(f"Welch's test needs >= 2 values per side, got {ma.n} and {mb.n}")
    va, vb = ma.std ** 2 / ma.n, mb.std ** 2 / mb.n
    diff = mb.mean - ma.mean
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(diff, diff, diff, 0.0 if diff != 0 else 1.0, math.inf)
    # Welch-Satterthwaite degrees of freedom
    df = (va + vb) ** 2 / (va ** 2 / (ma.n - 1) + vb ** 2 / (mb.n - 1))
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return Difference(diff, diff - half, diff + half, p, df)


def power(diff: float, std_a: float, std_b: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that Welch's two-sided test at ``alpha`` resolves a true difference ``diff`` with
    ``n`` seeds per strategy at the given stds (noncentral t with the Welch-Satterthwaite df)."""
    va, vb = std_a ** 2 / n, std_b ** 2 / n
    if va + vb == 0:
        return 1.0 if diff != 0 else 0.0
    df = (va + vb) ** 2 / ((va ** 2 + vb ** 2) / (n - 1))
    ncp = abs(diff) / math.sqrt(va + vb)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def seeds_needed(diff: float, std_a: float, std_b: float, alpha: float = ALPHA, target: float = POWER,
                 limit: int = 10_000) -> int:
    """The fewest seeds per strategy (>= 2) at which Welch's test resolves ``diff`` with probability
    ``target``, at the given stds; ``limit`` when even that many would not (e.g. a zero difference)."""
    if diff == 0:
        return limit
    hi = 2  # power grows with n: double to bracket the answer (noncentral t is NaN at huge ncp), then bisect
    while power(diff, std_a, std_b, hi, alpha) < target:
        if hi >= limit:
            return limit
        hi = min(2 * hi, limit)
    lo = max(2, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if power(diff, std_a, std_b, mid, alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def verdict(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> str:
    """``better`` / ``worse`` (b against the baseline a) when Welch's p < alpha, else ``not resolved (...)``."""
    n = f"n={len(b)}" if len(a) == len(b) else f"n={len(a)}/{len(b)}"
    if len(a) < 2 or len(b) < 2:
        return f"not resolved ({n}; at least 2 seeds per strategy are needed to estimate the noise)"
    d = welch(a, b, alpha)
    if d.p < alpha:
        return "better" if d.diff > 0 else "worse"
    if d.diff == 0:
        return f"not resolved ({n}; the means are equal)"
    k = seeds_needed(d.diff, mean_ci(a).std, mean_ci(b).std, alpha)
    if k > 1000:
        return f"not resolved ({n}; more than 1000 seeds per strategy would be needed for a difference this size)"
    return f"not resolved ({n}; about {k} seeds per strategy would resolve a difference this size)"


__all__ = ["MeanCI", "Difference", "mean_ci", "welch", "seeds_needed", "power", "verdict", "ALPHA", "POWER"]
