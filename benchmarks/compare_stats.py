"""Error and power of compare.py's verdicts by simulation: no training, the same functions --report uses.

    python benchmarks/compare_stats.py [--reps 2000] [--seed 0]

Prints, for 6 strategies whose mAP50-95 over seeds is normal with std 0.02:
- under the null (all equal, 5 seeds each): how often any verdict against the baseline, any `best: no`,
  or either, is a false call (family-wise error, should be <= alpha);
- the same for `--seeds auto` (cap 10);
- power: one strategy 3 std ahead with 5 seeds: how often its verdict is `better` and it alone is best;
- a BCCD-like scenario (one strategy +0.08, two +0.03, three +0): seeds spent by `--seeds auto` against
  a fixed 10 seeds each, and how often each ends with the +0.08 strategy alone as best.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.compare.stats import ALPHA, auto_rounds, best_set, verdicts  # noqa: E402

NAMES = ["yolov5", "ota", "freeanchor", "gfl", "ssd", "dw"]
STD = 0.02


def draw(rng: np.random.Generator, shifts: Sequence[float], n: int, std: float = STD) -> dict[str, dict[int, float]]:
    """strategy -> seed -> mAP50-95, normal around 0.45 + shift."""
    return {name: dict(enumerate(rng.normal(0.45 + d, std, n).tolist())) for name, d in zip(NAMES, shifts)}


def fixed_calls(runs, alpha: float = ALPHA) -> tuple[bool, bool, str, tuple[str, ...], bool]:
    """(any verdict resolved, any strategy not best, the verdict of NAMES[1], the best set, any raw p below
    alpha: what the verdicts said before the family-wise correction) with one look."""
    v = verdicts(runs, NAMES[0], alpha=alpha)
    best = best_set(runs, alpha=alpha)
    return (any(o.call for o, _ in v.values()), len(best.best) < len(runs), v[NAMES[1]][1], best.best,
            any(o.p < alpha for o, _ in v.values()))


def auto_calls(runs, max_seeds: int = 10, alpha: float = ALPHA) -> tuple[bool, bool, int, tuple[str, ...]]:
    """(any verdict resolved, any strategy not best, seeds spent, best set) of --seeds auto on these runs."""
    rnd = auto_rounds(runs, NAMES, max_seeds, alpha)
    held = {x: 0 for x in NAMES}
    for look in rnd.looks:
        held.update({x: len(s) for x, s in look.seeds.items()})
    view = {x: {s: runs[x][s] for s in range(held[x])} for x in NAMES}
    v = verdicts(view, NAMES[0], list(rnd.looks), alpha)
    return any(o.call for o, _ in v.values()), len(rnd.best.best) < len(NAMES), sum(held.values()), rnd.best.best


def null_rates(reps: int, seed: int, auto: bool) -> tuple[float, float, float, float]:
    """Family-wise false-call rates when all six strategies are equal: verdicts, best, either, and the
    uncorrected verdicts (each p < alpha alone; NaN for --seeds auto)."""
    rng = np.random.default_rng(seed)
    hits = np.zeros((reps, 3), bool)
    for i in range(reps):
        if auto:
            hits[i, :2] = auto_calls(draw(rng, [0] * 6, 10))[:2]
        else:
            calls = fixed_calls(draw(rng, [0] * 6, 5))
            hits[i] = calls[0], calls[1], calls[4]
    raw = float("nan") if auto else float(hits[:, 2].mean())
    return float(hits[:, 0].mean()), float(hits[:, 1].mean()), float(hits[:, :2].any(1).mean()), raw


def power_at(shift_std: float, reps: int, seed: int, n: int = 5) -> tuple[float, float]:
    """How often a strategy ``shift_std`` stds ahead is called better, and is alone in the best set."""
    rng = np.random.default_rng(seed)
    better = alone = 0
    for _ in range(reps):
        _, _, words, best, _ = fixed_calls(draw(rng, [0, shift_std * STD, 0, 0, 0, 0], n))
        better += words == "better"
        alone += best == (NAMES[1],)
    return better / reps, alone / reps


def bccd_like(reps: int, seed: int) -> tuple[float, float, float]:
    """Mean seeds spent by --seeds auto, and how often auto and fixed 10 end with NAMES[0] alone best."""
    rng = np.random.default_rng(seed)
    spent, auto_alone, fixed_alone = [], 0, 0
    for _ in range(reps):
        runs = draw(rng, [0.08, 0.03, 0.03, 0, 0, 0], 10)
        _, _, n, best = auto_calls(runs)
        spent.append(n)
        auto_alone += best == (NAMES[0],)
        fixed_alone += fixed_calls(runs)[3] == (NAMES[0],)
    return float(np.mean(spent)), auto_alone / reps, fixed_alone / reps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    t0 = time.time()
    print(f"command: python benchmarks/compare_stats.py --reps {a.reps} --seed {a.seed}   (alpha {ALPHA})")
    print("\n| all six equal: rate of any false call | verdicts | best | either | verdicts uncorrected |\n"
          "|---|---|---|---|---|")
    for label, auto in (("5 seeds each", False), ("--seeds auto, cap 10", True)):
        v, b, e, raw = null_rates(a.reps, a.seed, auto)
        print(f"| {label} | {v:.3f} | {b:.3f} | {e:.3f} | {'-' if auto else f'{raw:.3f}'} |")
    print("\n| true difference (5 seeds each, std 0.02) | called better | alone best |\n|---|---|---|")
    for k in (2, 3, 4):
        better, alone = power_at(k, a.reps, a.seed)
        print(f"| {k} std ahead of five equal strategies | {better:.3f} | {alone:.3f} |")
    spent, auto_alone, fixed_alone = bccd_like(a.reps // 4, a.seed)
    print("\n| BCCD-like: +0.08, +0.03, +0.03, 0, 0, 0 (std 0.02) | seeds spent | +0.08 alone best |\n|---|---|---|")
    print(f"| fixed 10 seeds each | 60 | {fixed_alone:.3f} |")
    print(f"| --seeds auto, cap 10 | {spent:.1f} | {auto_alone:.3f} |")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
