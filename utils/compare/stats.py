"""Statistics of a comparison: which strategies differ, which are best, and when to stop adding seeds.

Each (strategy, seed) run gives one number (mAP50-95 of its best.pt, or one class's AP). Over a
strategy's seeds: the mean with its 95 % Student-t interval. Two strategies: the difference of means
with Welch's interval and two-sided p (no equal variance assumed: one strategy can be much steadier over
seeds than another).

**What is controlled.** A comparison asks several questions at once, so each *family* of questions keeps
its family-wise error (the chance of even one false ``better`` / ``worse`` in it) at ``alpha``:

- the verdicts: every strategy against the baseline (the first strategy), ``S - 1`` tests;
- the best set: every pair of strategies, ``S (S - 1) / 2`` tests; a strategy is ``best`` unless some
  other strategy is resolved above it;
- per class: every (class, strategy) against the baseline, ``C (S - 1)`` tests;
- "Rule or loss?": the one-factor steps that split the leads over the baseline (``utils.compare.factors``).

Within a family the p-values are adjusted by Holm's step-down method (Holm 1979, Scand. J. Statist.
6:65-70). Holm is chosen because its guarantee needs nothing but valid p-values: the tests of one
family share the baseline's seeds (pairs share both strategies'), so they are correlated in ways a
method like Dunnett's would have to model for Welch's unequal variances; Holm holds under any
dependence and rejects everything Bonferroni rejects, and more.

**Looks.** Looking at the data, adding seeds and looking again is another test each time. A look is the
set of seeds each strategy had finished when a verdict was computed, with a share ``w`` of alpha
(shares sum to at most 1). A pair's statistic over its looks is ``q = min_k p_k / w_k`` (p_k its Welch
p at look k, on the seeds both had then) and Holm runs on the q's. For one look (w = 1) that is plain
Holm. For several it is the closure of weighted Bonferroni tests over (hypothesis, look), so the
family-wise error of all looks together stays at alpha whatever the correlation between looks - as
long as the shares were fixed before the data were seen:

- ``--seeds auto`` fixes them in advance: looks at the seed counts of ``seed_schedule`` with shares
  from the alpha-spending function ``alpha * t^2``, t = seeds / cap (the power family of Kim & DeMets
  1987, Biometrics 43:857-864, within the spending approach of Lan & DeMets 1983, Biometrika
  70:659-663): at a cap of 10 the looks at 3 / 5 / 8 / 10 seeds get 9 / 16 / 39 / 36 % of alpha. A
  look at 3 seeds can only resolve very clear gaps anyway; keeping most of alpha for the later looks
  kept the power close to fixed 10 seeds (``benchmarks/compare_stats.py``: Pocock-type spending,
  ln(1 + (e - 1) t), stopped earlier but found the single best in 73 % instead of 96 % of BCCD-like
  replicates for about the same seeds). Using the union bound instead of the exact group-sequential
  boundaries (which model the correlation between looks) makes it conservative, never liberal. Each look tests a pair only when both strategies have
  exactly that look's seed count, so every test has a sample size fixed in advance; a strategy stops
  receiving seeds when it is resolved or hopeless (futility stopping, which cannot raise the error).
- Seeds added by hand are looks too (``compare.json`` records them); the report splits alpha equally
  over the recorded looks, which covers looks planned in advance but not seeds added because an
  earlier look was unresolved; the report says so.

The seeds estimate of an unresolved verdict is the sample size of Welch's test at power 0.8 at the
level the smallest p of the pairs family must reach (``alpha / m``, m = S (S - 1) / 2, Bonferroni's, so
it errs on the side of more seeds): the fewest seeds per strategy at which a true difference of the
observed size, at the observed stds, is resolved in 80 % of repetitions (noncentral t). One level for
the verdicts and for results.md's sentence, so a pair's estimate is one number wherever it is quoted.
It is "about": the stds are themselves estimated from few seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from scipy import special, stats

ALPHA = 0.05
POWER = 0.8
HOPELESS_POWER = 0.1  # a strategy whose gap to the leader would be resolved at the cap less often stops
SPENDING_RHO = 2.0  # alpha spent by the looks of --seeds auto: alpha * (seeds / cap) ** rho
START_SEEDS = 3

Runs = Mapping[str, Mapping[int, float]]  # strategy -> seed -> value (mAP50-95 or one class's AP)


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


def t_quantile(q: float, df: float) -> float:
    """Student-t quantile (scipy's ufunc: the same value as ``stats.t.ppf``, without its overhead)."""
    return float(special.stdtrit(df, q))


def moments(values: Sequence[float]) -> tuple[int, float, float]:
    """n, mean and sample variance (ddof 1; NaN for one value) of ``values``."""
    n = len(values)
    mean = math.fsum(values) / n
    return n, mean, (math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan)


def mean_ci(values: Sequence[float], alpha: float = ALPHA) -> MeanCI:
    """Mean, std and the (1 - alpha) Student-t interval of the mean of ``values`` (n >= 1)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    _, mean, var = moments(values)
    if n == 1:
        return MeanCI(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(var)
    half = t_quantile(1 - alpha / 2, n - 1) * std / math.sqrt(n)
    return MeanCI(n, mean, std, mean - half, mean + half)


def welch(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> Difference:
    """Welch's t-test of mean(b) - mean(a): the difference, its (1 - alpha) interval and two-sided p.

    Both sides need n >= 2. When both are constant (zero std) the difference is exact: p = 0 if the
    means differ, else 1, and the interval is the difference itself."""
    (na, mean_a, var_a), (nb, mean_b, var_b) = moments(a), moments(b)
    if na < 2 or nb < 2:
        raise ValueError(f"Welch's test needs >= 2 values per side, got {na} and {nb}")
    va, vb = var_a / na, var_b / nb
    diff = mean_b - mean_a
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(diff, diff, diff, 0.0 if diff != 0 else 1.0, math.inf)
    # Welch-Satterthwaite degrees of freedom
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    p = float(2 * special.stdtr(df, -abs(diff / se)))
    half = t_quantile(1 - alpha / 2, df) * se
    return Difference(diff, diff - half, diff + half, p, df)


def power(diff: float, std_a: float, std_b: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that Welch's two-sided test at ``alpha`` resolves a true difference ``diff`` with
    ``n`` seeds per strategy at the given stds (noncentral t with the Welch-Satterthwaite df)."""
    va, vb = std_a ** 2 / n, std_b ** 2 / n
    if va + vb == 0:
        return 1.0 if diff != 0 else 0.0
    df = (va + vb) ** 2 / ((va ** 2 + vb ** 2) / (n - 1))
    ncp = abs(diff) / math.sqrt(va + vb)
    crit = t_quantile(1 - alpha / 2, df)
    p = float(1 - special.nctdtr(df, ncp, crit) + special.nctdtr(df, ncp, -crit))
    return p if not math.isnan(p) else float(ncp > crit)  # scipy's noncentral t is NaN far in the tail


def seeds_needed(diff: float, std_a: float, std_b: float, alpha: float = ALPHA, target: float = POWER,
                 limit: int = 10_000) -> int:
    """The fewest seeds per strategy (>= 2) at which Welch's test resolves ``diff`` with probability
    ``target``, at the given stds; ``limit`` when even that many would not (e.g. a zero difference).

    Starts from the normal approximation n = (z_{alpha/2} + z_power)^2 (sa^2 + sb^2) / diff^2 and walks
    to the exact answer (power grows with n), so it costs a few noncentral-t evaluations."""
    if diff == 0:
        return limit
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target)
    n = min(limit, max(2, math.floor(z * z * (std_a ** 2 + std_b ** 2) / diff ** 2)))
    if power(diff, std_a, std_b, n, alpha) >= target:
        while n > 2 and power(diff, std_a, std_b, n - 1, alpha) >= target:
            n -= 1
        return n
    step = 1
    while n < limit:  # up: in steps of 1, then doubling (the t tails need a few more seeds than the normal)
        lo, n = n, min(limit, n + step)
        if power(diff, std_a, std_b, n, alpha) >= target:
            while lo + 1 < n:  # bisect (lo, n]
                mid = (lo + n) // 2
                lo, n = (lo, mid) if power(diff, std_a, std_b, mid, alpha) >= target else (mid, n)
            return n
        step *= 2
    return limit


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject hypothesis i at family-wise level alpha iff
    ``adjusted[i] < alpha``. ``adjusted_(j) = max_{i <= j} min(1, (m - i + 1) p_(i))`` over the sorted p."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# --- looks and families -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Look:
    """The seeds each strategy had finished when a verdict was computed, and the share of alpha the
    look may spend (the shares of all looks of a comparison sum to at most 1)."""
    seeds: Mapping[str, tuple[int, ...]]
    weight: float = 1.0


def one_look(runs: Runs) -> list[Look]:
    """Every finished run, looked at once with all of alpha."""
    return [Look({s: tuple(sorted(v)) for s, v in runs.items()}, 1.0)]


@dataclass(frozen=True)
class Pair:
    """One test of a family: ``b`` against ``a`` (the difference is b - a); ``va`` / ``vb`` map seed -> value."""
    a: str
    b: str
    va: Mapping[int, float]
    vb: Mapping[int, float]


@dataclass(frozen=True)
class Outcome:
    """A pair's result within its family: the difference on all seeds (b - a), the raw Welch p on all
    seeds (NaN below 2 per side), the look-weighted statistic q, the Holm-adjusted p and the call:
    ``+1`` (b resolved above a), ``-1`` (below) or ``0`` (not resolved)."""
    diff: float
    p: float
    q: float
    p_adj: float
    call: int


def look_statistic(pair: Pair, looks: Sequence[Look]) -> tuple[float, int]:
    """``q = min_k p_k / w_k`` over the looks at which both strategies had >= 2 seeds (1.0 if none),
    and the sign of the difference at the look that gave the minimum."""
    best, sign = 1.0, 0
    for look in looks:
        sa = [s for s in look.seeds.get(pair.a, ()) if s in pair.va]
        sb = [s for s in look.seeds.get(pair.b, ()) if s in pair.vb]
        if len(sa) < 2 or len(sb) < 2 or look.weight <= 0:
            continue
        d = welch([pair.va[s] for s in sa], [pair.vb[s] for s in sb])
        q = min(1.0, d.p / look.weight)
        if q < best or sign == 0:
            best, sign = min(best, q), (1 if d.diff > 0 else -1 if d.diff < 0 else 0)
    return best, sign


def adjust_family(pairs: Sequence[Pair], looks: Sequence[Look], alpha: float = ALPHA) -> list[Outcome]:
    """Every pair of one family, Holm-adjusted over the family and over its looks (module docstring).

    Pairs never testable (fewer than 2 seeds a side at every look) still count in the family size."""
    qs = [look_statistic(p, looks) for p in pairs]
    adjusted = holm([q for q, _ in qs])
    out = []
    for pair, (q, sign), p_adj in zip(pairs, qs, adjusted):
        va, vb = list(pair.va.values()), list(pair.vb.values())
        diff = (math.fsum(vb) / len(vb) - math.fsum(va) / len(va)) if va and vb else math.nan
        p = welch(va, vb).p if len(va) >= 2 and len(vb) >= 2 else math.nan
        out.append(Outcome(diff, p, q, p_adj, sign if p_adj < alpha else 0))
    return out


# --- the three families of a comparison ---------------------------------------------------------------

def seeds_phrase(k: int, have: int) -> str:
    """How many seeds an estimate asks for, said one way everywhere: seeds per strategy in all, and how
    many more than the ``have`` each has (at least one more: with ``have`` it did not resolve)."""
    total = max(k, have + 1)
    return f"about {total} seeds per strategy in all ({total - have} more)"


def seed_counts(a: str, b: str, na: int, nb: int) -> str:
    """``5 seeds each``, or ``5 seeds of yolov5, 3 of tal``."""
    return f"{na} seeds each" if na == nb else f"{na} seed{'s' * (na != 1)} of {a}, {nb} of {b}"


def words(outcome: Outcome, names: tuple[str, str], va: Sequence[float], vb: Sequence[float], alpha: float,
          m: int, level_m: int | None = None) -> str:
    """The verdict words of ``names[1]`` against ``names[0]``: ``better`` / ``worse`` when resolved, else
    ``not resolved (...)`` with the seeds on each side, why an interval that excludes 0 is not enough
    (it is uncorrected: over the family of ``m`` the adjusted p is not below alpha), and about how many
    seeds would resolve a difference of the observed size at level alpha / ``level_m`` (default ``m``)."""
    if outcome.call:
        return "better" if outcome.call > 0 else "worse"
    n = seed_counts(*names, len(va), len(vb))
    if len(va) < 2 or len(vb) < 2:
        return f"not resolved ({n}; at least 2 seeds per strategy are needed to estimate the noise)"
    if outcome.diff == 0:
        return f"not resolved ({n}; the means are equal)"
    why = ""
    if outcome.p < ALPHA:  # the table's 95 % interval of the difference excludes 0
        why = (f"; its 95 % interval excludes 0 but is uncorrected: over the {m} comparisons (Holm) "
               f"p_adj {outcome.p_adj:.3f} is not below {alpha:g}")
    k = seeds_needed(outcome.diff, mean_ci(va).std, mean_ci(vb).std, alpha / max(level_m or m, 1))
    if k > 1000:
        return f"not resolved ({n}{why}; more than 1000 seeds per strategy would be needed for a difference this size)"
    return f"not resolved ({n}{why}; {seeds_phrase(k, min(len(va), len(vb)))} would resolve a difference this size)"


def verdicts(runs: Runs, baseline: str, looks: Sequence[Look] | None = None, alpha: float = ALPHA
             ) -> dict[str, tuple[Outcome, str]]:
    """Every other strategy against ``baseline`` as one family: strategy -> (outcome, verdict words)."""
    looks = one_look(runs) if looks is None else looks
    others = [s for s in runs if s != baseline]
    pairs = [Pair(baseline, s, runs[baseline], runs[s]) for s in others]
    outcomes = adjust_family(pairs, looks, alpha)
    n = sum(1 for s in runs if runs[s])
    level_m = max(len(pairs), n * (n - 1) // 2)  # the best set's family: one estimate per pair (docstring)
    return {s: (o, words(o, (baseline, s), list(runs[baseline].values()), list(runs[s].values()), alpha, len(pairs),
                         level_m)) for s, o in zip(others, outcomes)}


def verdict(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> str:
    """The verdict of one strategy ``b`` against a baseline ``a`` when they are the whole family (one test)."""
    return verdicts({"a": dict(enumerate(a)), "b": dict(enumerate(b))}, "a", alpha=alpha)["b"][1]


@dataclass(frozen=True)
class BestSet:
    """The strategies not resolved below any other (all pairs as one family), the leader (highest
    mean), whether the leader is resolved above every other one directly (``alone``), and the pairs'
    outcomes keyed (a, b) as tested (b - a)."""
    best: tuple[str, ...]
    leader: str
    alone: bool
    outcomes: Mapping[tuple[str, str], Outcome] = field(repr=False)


def best_set(runs: Runs, looks: Sequence[Look] | None = None, alpha: float = ALPHA) -> BestSet:
    """Multiple comparisons with the best by Holm over all pairs: a strategy is best unless some other
    strategy is resolved above it. Needs at least one strategy with a run."""
    looks = one_look(runs) if looks is None else looks
    names = [s for s in runs if runs[s]]
    pairs = [Pair(a, b, runs[a], runs[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    outcomes = dict(zip(((p.a, p.b) for p in pairs), adjust_family(pairs, looks, alpha)))
    below = {p.a for p in pairs if outcomes[p.a, p.b].call > 0} | {p.b for p in pairs if outcomes[p.a, p.b].call < 0}
    mean = {s: math.fsum(runs[s].values()) / len(runs[s]) for s in names}
    leader = max(names, key=lambda s: mean[s])
    ahead = {p.b if p.a == leader else p.a for p in pairs if leader in (p.a, p.b)
             and outcomes[p.a, p.b].call == (-1 if p.a == leader else 1)}
    return BestSet(tuple(s for s in names if s not in below), leader, ahead == set(names) - {leader}, outcomes)


def gap_to_leader(runs: Runs, s: str, leader: str) -> tuple[float, float, float]:
    """(mean of leader - mean of s, std of s, std of the leader); NaN std below 2 seeds."""
    a, b = mean_ci(list(runs[s].values())), mean_ci(list(runs[leader].values()))
    return b.mean - a.mean, a.std, b.std


@dataclass(frozen=True)
class Settle:
    """What would settle the closest unresolved gap to the leader: the runner-up, the gap of the means,
    seeds per strategy in all (``seeds_needed``; None when no practical number would, or the noise is
    not estimable yet) and the seeds the tied strategies hold now."""
    runner: str
    gap: float
    seeds: int | None
    have: int


def settle(runs: Runs, best: BestSet, alpha: float = ALPHA, hopeless: Sequence[str] = ()) -> Settle | None:
    """``Settle`` for the best set less the ``hopeless`` strategies; None when the leader is alone."""
    tied = [s for s in best.best if s != best.leader and s not in hopeless]
    if not tied:
        return None
    runner = min(tied, key=lambda s: gap_to_leader(runs, s, best.leader)[0])
    gap, sa, sb = gap_to_leader(runs, runner, best.leader)
    have = min(len(runs[s]) for s in [best.leader, *tied])
    if math.isnan(sa) or math.isnan(sb):
        return Settle(runner, gap, None, have)
    k = seeds_needed(gap, sa, sb, alpha / max(len(best.outcomes), 1))
    return Settle(runner, gap, k if k <= 1000 else None, have)


def best_sentence(runs: Runs, best: BestSet, data: str, alpha: float = ALPHA, hopeless: Sequence[str] = ()) -> str:
    """One plain sentence on which strategies are best, for the top of results.md; strategies stopped as
    ``hopeless`` by ``--seeds auto`` are named as such, not as tied."""
    ns = sorted({len(v) for v in runs.values() if v})
    n = f"{ns[0]} seeds each" if len(ns) == 1 else f"{ns[0]} to {ns[-1]} seeds per strategy"
    others = len([s for s in runs if runs[s]]) - 1
    stopped = [s for s in best.best if s in hopeless and s != best.leader]
    tail = (f"; {', '.join(stopped)} stopped as hopeless (not resolved below {best.leader}, but a gap this size "
            "would rarely be resolved by the cap)" if stopped else "")
    if best.alone and others:
        return f"Best on {data} ({n}): {best.leader}, resolved ahead of the other {others}."
    found = settle(runs, best, alpha, hopeless)
    if found is None:
        return f"Best on {data} ({n}): {best.leader}{tail}."
    tied = [best.leader] + [s for s in best.best if s != best.leader and s not in hopeless]
    head = f"Not resolved between {', '.join(tied)} on {data} ({n}){tail}"
    if found.seeds is None and any(len(runs[s]) < 2 for s in tied):
        return head + "; at least 2 seeds per strategy are needed to estimate the noise."
    if found.seeds is None:
        return head + f"; their means differ by {found.gap:.3f}, which no practical number of seeds would settle."
    return head + (f"; {seeds_phrase(found.seeds, found.have)} would settle a difference of this size "
                   f"({found.runner} {found.gap:.3f} behind {best.leader}).")


def class_verdicts(per_class: Mapping[str, Runs], baseline: str, looks: Sequence[Look] | None = None,
                   alpha: float = ALPHA) -> dict[tuple[str, str], tuple[Outcome, str]]:
    """Every (class, strategy) against the baseline's AP of that class as ONE family: (class, strategy)
    -> (outcome, verdict words)."""
    keys, pairs = [], []
    for c, runs in per_class.items():
        for s in runs:
            if s != baseline and baseline in runs:
                keys.append((c, s))
                pairs.append(Pair(baseline, s, runs[baseline], runs[s]))
    if looks is None:
        looks = one_look({s: {seed: 0.0 for runs in per_class.values() for seed in runs.get(s, {})}
                          for s in {s for runs in per_class.values() for s in runs}})
    outcomes = adjust_family(pairs, looks, alpha)
    return {k: (o, words(o, (p.a, p.b), list(p.va.values()), list(p.vb.values()), alpha, len(pairs)))
            for k, p, o in zip(keys, pairs, outcomes)}


# --- adaptive seeds (--seeds auto) ----------------------------------------------------------------------

def seed_schedule(max_seeds: int, start: int = START_SEEDS) -> list[int]:
    """The seed counts at which ``--seeds auto`` looks: 3, then about half as many again each round
    (at least 2 more), ending at the cap: 10 -> [3, 5, 8, 10], 20 -> [3, 5, 8, 12, 18, 20]."""
    if max_seeds < start:
        raise ValueError(f"--max-seeds must be at least {start}, got {max_seeds}")
    out = [start]
    while out[-1] < max_seeds:
        out.append(min(max_seeds, out[-1] + max(2, math.ceil(out[-1] / 2))))
    return out


def spending(schedule: Sequence[int], rho: float = SPENDING_RHO) -> list[float]:
    """Shares of alpha per look from the spending function t^rho, t = n / cap (they sum to 1)."""
    f = [(n / schedule[-1]) ** rho for n in schedule]
    return [f[0]] + [f[k] - f[k - 1] for k in range(1, len(f))]


@dataclass(frozen=True)
class Round:
    """The state of ``--seeds auto`` after a look: the looks so far, the best set, the strategies to
    run to the next look's seed count (empty: stop), and why each other strategy stopped."""
    looks: tuple[Look, ...]
    best: BestSet
    active: tuple[str, ...]
    stopped: Mapping[str, str]


def auto_rounds(runs: Runs, strategies: Sequence[str], max_seeds: int, alpha: float = ALPHA) -> Round:
    """Replay ``--seeds auto`` on the finished runs: at each look of ``seed_schedule(max_seeds)`` the
    active strategies (all at first) hold seeds 0..n-1; the best set is tested over the looks so far on
    the seeds each strategy held; a strategy stops when resolved below another, when it is the leader
    resolved above all others, or when hopeless (its gap to the leader would be resolved at the cap
    with probability below ``HOPELESS_POWER`` at the last look's level); the leader runs on (or is
    brought back) while any other strategy runs.

    Returns the round at the first look whose runs are not all finished (``active`` then names who
    still needs seeds 0..n-1 for it), or the final round (``active`` empty). Deterministic in the runs:
    a rerun replays the same decisions, and seeds beyond those the procedure asked for are ignored."""
    sched = seed_schedule(max_seeds)
    shares = spending(sched)
    held = {x: 0 for x in strategies}  # seeds 0..held-1 of each strategy enter the tests
    active, looks, stopped = list(strategies), [], {}
    best = best_set_placeholder(strategies)
    for n, w in zip(sched, shares):
        if any(s not in runs.get(x, {}) for x in active for s in range(n)):
            return Round(tuple(looks), best, tuple(active), dict(stopped))
        held.update({x: n for x in active})
        looks.append(Look({x: tuple(range(n)) for x in active}, w))
        view = {x: {s: runs[x][s] for s in range(held[x])} for x in strategies if held[x]}
        best = best_set(view, looks, alpha)
        # the level a still unresolved pair must reach at the last look, once Holm has set aside the resolved ones
        last_level = alpha * shares[-1] / max(1, sum(o.call == 0 for o in best.outcomes.values()))
        nxt = []
        for x in active:
            if x not in best.best:
                stopped[x] = "resolved below another strategy"
            elif x == best.leader and best.alone:
                stopped[x] = "resolved ahead of every other"
            elif x != best.leader and hopeless(view, x, best.leader, max_seeds, last_level):
                stopped[x] = "hopeless: its gap to the leader would rarely be resolved by the cap"
            else:
                nxt.append(x)
        if nxt and best.leader not in nxt:
            nxt.append(best.leader)
        if len(nxt) == 1:  # a leader left alone has no one to be compared with
            stopped[nxt[0]] = "no other strategy left unresolved"
            nxt = []
        for x in nxt:
            stopped.pop(x, None)
        active = [x for x in strategies if x in nxt]
        if not active:
            break
    return Round(tuple(looks), best, (), dict(stopped))


def hopeless(runs: Runs, s: str, leader: str, max_seeds: int, level: float) -> bool:
    """Whether a true gap of the observed size, at the observed stds, would be resolved with ``max_seeds``
    per strategy at ``level`` less often than ``HOPELESS_POWER`` (futility, non-binding)."""
    gap, sa, sb = gap_to_leader(runs, s, leader)
    if math.isnan(sa) or math.isnan(sb):
        return False
    return gap <= 0 or power(gap, sa, sb, max_seeds, level) < HOPELESS_POWER


def best_set_placeholder(strategies: Sequence[str]) -> BestSet:
    """The best set before any look: every strategy, no leader resolved."""
    return BestSet(tuple(strategies), strategies[0], False, {})


__all__ = ["ALPHA", "POWER", "MeanCI", "Difference", "mean_ci", "welch", "power", "seeds_needed", "holm",
           "Look", "one_look", "Pair", "Outcome", "adjust_family", "verdicts", "verdict", "BestSet", "best_set",
           "best_sentence", "settle", "Settle", "seeds_phrase", "class_verdicts",
           "seed_schedule", "spending", "Round", "auto_rounds"]
