"""Is CPU bf16 training as accurate as fp32? The bf16 - fp32 difference of mean mAP50-95 per strategy.

    python compare.py --data data/bccd-adamw.yaml --cfg models/yolov5n.yaml --img 320 --batch-size 16 --epochs 30 \\
        --losses yolov5 --seeds 0,1,2,3,4,5,6,7 --workers 2 --noplots --precision fp32 --name bf16-adamw-fp32
    python compare.py ... the same ... --precision bf16 --name bf16-adamw-bf16
    python benchmarks/bf16_equivalence.py runs/compare/bf16-adamw-fp32 runs/compare/bf16-adamw-bf16

Reads the finished runs of two comparison folders (one precision each: ``compare.py --report`` refuses
to mix them), and for every strategy in both prints n, the mean ± std of each side and the difference
bf16 - fp32 with Welch's 95 % interval (utils.compare.stats). The verdict is "equivalent" when the
interval lies inside ±``--margin`` (0.02, issue 29) with at least ``--min-seeds`` runs per side;
``CPU_BF16_BY_DEFAULT`` in utils/core/precision.py follows that verdict (docs/cpu_bf16.md: equivalent,
so True). Prints the command.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.compare.runs import RunRecord, find_runs  # noqa: E402
from utils.compare.stats import mean_ci, welch  # noqa: E402


def side(folder: Path, expected: str) -> dict[str, list[float]]:
    """Strategy -> mAP50-95 of the finished runs under ``folder``, which must all be ``expected``."""
    records: list[RunRecord] = find_runs([folder])
    found = {r.settings.get("precision") for r in records}
    if found != {expected}:
        raise SystemExit(f"error: {folder} holds runs of precision {sorted(map(str, found))}, expected {expected}")
    out: dict[str, list[float]] = {}
    for r in records:
        out.setdefault(r.loss, []).append(r.map)
    return out


def verdict(low: float, high: float, n: tuple[int, int], margin: float, min_seeds: int) -> str:
    """"equivalent" when [low, high] lies inside +-margin with enough seeds per side."""
    if min(n) < min_seeds:
        return f"too few seeds (need {min_seeds} per side)"
    return "equivalent" if -margin < low and high < margin else f"not shown within ±{margin}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fp32", type=Path, help="comparison folder of the fp32 runs")
    p.add_argument("bf16", type=Path, help="comparison folder of the bf16 runs")
    p.add_argument("--margin", type=float, default=0.02, help="equivalence margin of mAP50-95")
    p.add_argument("--min-seeds", type=int, default=5)
    a = p.parse_args()
    fp32, bf16 = side(a.fp32, "fp32"), side(a.bf16, "bf16")
    common = [loss for loss in fp32 if loss in bf16]
    if not common:
        raise SystemExit(f"error: no strategy has runs in both {a.fp32} and {a.bf16}")
    print("| loss | n fp32 / bf16 | fp32 mAP50-95 | bf16 mAP50-95 | bf16 - fp32 [95 % CI] | verdict |")
    print("|---|---|---|---|---|---|")
    for loss in common:
        x, y = fp32[loss], bf16[loss]
        mx, my = mean_ci(x), mean_ci(y)
        n = (len(x), len(y))
        if min(n) < 2:
            cells = f"{my.mean - mx.mean:+.3f} [-]", verdict(0, 0, n, a.margin, max(a.min_seeds, 2))
        else:
            d = welch(x, y)
            cells = f"{d.diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}]", verdict(d.low, d.high, n, a.margin, a.min_seeds)
        print(f"| {loss} | {n[0]} / {n[1]} | {mx.mean:.3f} ± {mx.std:.3f} | {my.mean:.3f} ± {my.std:.3f} "
              f"| {cells[0]} | {cells[1]} |")
    print("command: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
