"""Is it the rule or the loss? A comparison's leads over its baseline, split into one-factor steps.

A strategy is a (loss, matching rule) pair: ``gfl`` is the GFL loss on ATSS positives, ``yolov5+atss`` the
YOLOv5 loss on the same positives. When a comparison holds both, the lead of ``gfl`` over ``yolov5`` is the
sum of two steps that each change one thing:

    gfl - yolov5  =  (yolov5+atss - yolov5)   +   (gfl - yolov5+atss)
                      the rule, loss fixed         the loss (and the head it trains), rule fixed

A strategy that changes both factors against the baseline is split through every strategy of the
comparison that changes one of them (the baseline's loss with its rule, or its loss with the baseline's
rule); one that changes one factor is its own single step; one with no such middle strategy is not split
(the section names the strategy that would split it). The means add up exactly when every strategy has
the same seeds.

Each step is a Welch difference (``utils.compare.stats``). The steps of all splits are one family: their
verdicts are Holm-adjusted over the family and over the comparison's looks, like the verdicts against the
baseline, so the chance of even one false ``better`` / ``worse`` among them is at most alpha. A step
that is not resolved is not evidence of no effect; its 95 % interval says how large an effect the seeds
still allow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from utils.compare.stats import ALPHA, Look, Outcome, Pair, Runs, adjust_family, mean_ci, one_look, welch, words
from utils.loss import LOSSES, split_strategy, strategy_label


def factors(strategy: str) -> tuple[str, str]:
    """``(loss, rule)`` of a strategy name: ``gfl`` -> ``('gfl', 'atss')``, ``yolov5+tal`` -> ``('yolov5', 'tal')``."""
    loss, rule = split_strategy(strategy)
    return loss, rule or LOSSES[loss].default_assigner()


@dataclass(frozen=True)
class Step:
    """``b`` against ``a``, which differ in one factor (``'rule'`` or ``'loss'``)."""
    a: str
    b: str
    factor: str


@dataclass(frozen=True)
class Split:
    """The path from the baseline to ``strategy``: one step, or two through ``via`` (empty: not split;
    ``missing`` then names the strategies that would split it)."""
    strategy: str
    steps: tuple[Step, ...]
    via: str = ""
    missing: tuple[str, ...] = ()


def splits(strategies: Sequence[str], baseline: str) -> list[Split]:
    """Every other strategy's path from ``baseline`` in one-factor steps (module docstring)."""
    of = {s: factors(s) for s in strategies}
    by_pair = {v: s for s, v in of.items()}
    lb, rb = of[baseline]
    out = []
    for s in strategies:
        if s == baseline:
            continue
        ls, rs = of[s]
        if ls == lb or rs == rb:
            out.append(Split(s, (Step(baseline, s, "rule" if ls == lb else "loss"),)))
            continue
        paths = [(by_pair[(lb, rs)], "rule", "loss")] if (lb, rs) in by_pair else []
        paths += [(by_pair[(ls, rb)], "loss", "rule")] if (ls, rb) in by_pair else []
        for via, first, second in paths:
            out.append(Split(s, (Step(baseline, via, first), Step(via, s, second)), via))
        if not paths:
            wanted = [strategy_label(*pair) for pair in ((lb, rs), (ls, rb)) if pair[1] in LOSSES[pair[0]].assigners()]
            out.append(Split(s, (), missing=tuple(wanted)))
    return out


@dataclass(frozen=True)
class StepResult:
    """A step's outcome within the family, its verdict words and Welch's 95 % interval (NaN below 2 seeds)."""
    step: Step
    outcome: Outcome
    words: str
    low: float
    high: float


def decide_steps(runs: Runs, baseline: str, looks: Sequence[Look] | None = None, alpha: float = ALPHA
                 ) -> tuple[list[Split], dict[Step, StepResult]]:
    """The splits of ``runs`` (strategy -> seed -> value) and every distinct step's result, the steps
    Holm-adjusted as one family over ``looks`` (one look at every run when not given)."""
    present = {s: v for s, v in runs.items() if v}
    if baseline not in present:
        return [], {}
    looks = one_look(present) if looks is None else looks
    found = splits(list(present), baseline)
    steps = list(dict.fromkeys(st for sp in found for st in sp.steps))
    outcomes = adjust_family([Pair(st.a, st.b, present[st.a], present[st.b]) for st in steps], looks, alpha)
    results = {}
    for st, o in zip(steps, outcomes):
        va, vb = list(present[st.a].values()), list(present[st.b].values())
        d = welch(va, vb) if len(va) >= 2 and len(vb) >= 2 else None
        level = max(len(steps), len(present) * (len(present) - 1) // 2)  # the seeds estimate of every section
        results[st] = StepResult(st, o, words(o, (st.a, st.b), va, vb, alpha, len(steps), level),
                                 d.low if d else float("nan"), d.high if d else float("nan"))
    return found, results


def signed(x: float) -> str:
    return f"{x:+.3f}"


def cell(r: StepResult | None) -> str:
    """One step as a table cell: ``yolov5 → yolov5+atss: +0.031 [+0.010, +0.052], better``."""
    if r is None:
        return "-"
    ci = "" if r.low != r.low else f" [{signed(r.low)}, {signed(r.high)}]"
    return f"`{r.step.a}` → `{r.step.b}`: {signed(r.outcome.diff)}{ci}, {r.words}"


def factor_section(runs: Runs, baseline: str, looks: Sequence[Look] | None = None, alpha: float = ALPHA) -> list[str]:
    """results.md lines answering "the rule or the loss?" ([] unless some strategy changes both factors
    against the baseline and the comparison holds a strategy between them)."""
    found, results = decide_steps(runs, baseline, looks, alpha)
    if not any(sp.via for sp in found):
        return []
    rows = []
    for sp in found:
        lead = mean_ci(list(runs[sp.strategy].values())).mean - mean_ci(list(runs[baseline].values())).mean
        by = {st.factor: results[st] for st in sp.steps}
        if sp.steps:
            via = f"`{sp.via}`" if sp.via else "-"
        elif sp.missing:
            via = "not split: add " + " or ".join(f"`{m}`" for m in sp.missing)
        else:
            via = "not split: neither loss trains on the other's rule"
        rows.append([f"`{sp.strategy}`", signed(lead), via, cell(by.get("rule")), cell(by.get("loss"))])
    m = len(results)
    lines = ["## Rule or loss?", "",
             f"Each strategy's lead over `{baseline}` (difference of mean mAP50-95) as steps that change one "
             f"factor: the matching rule with the loss fixed, then the loss (with the head it trains) with the "
             f"rule fixed, through the strategy between them. Each step: difference of means with Welch's 95 % "
             f"interval (uncorrected); verdicts Holm-adjusted over the {m} distinct steps"
             f"{' and the looks' if looks is not None and len(looks) > 1 else ''} at {alpha:g}. The steps add up "
             "to the lead when every strategy has the same seeds.", "",
             "| strategy | lead | via | rule step | loss step |", "|---|---|---|---|---|",
             *("| " + " | ".join(r) + " |" for r in rows)]
    return lines


__all__ = ["factors", "splits", "Split", "Step", "StepResult", "decide_steps", "factor_section"]
