"""The tables and plots of a comparison, from its finished runs (``RunRecord``s).

- ``runs.csv``: one row per finished run: loss, seed, epochs, precision, map50, map, ap_<class> (AP50-95),
  collapsed (classes with recall 0 at the best-F1 threshold, ``;``-separated), started, finished
  (unix seconds), train_s.
- ``results.csv``: one row per strategy: n, mAP50 and mAP50-95 mean and std, the 95 % t interval of
  the mAP50-95 mean, and against the baseline (the first strategy) the Welch difference, its
  interval, the raw p, the p adjusted over the family and its looks (``map_p_adj``) and the verdict;
  ``best`` (yes / no: not resolved below any other strategy); then per class mean / std and how many
  runs collapsed, the mean speed columns and the failed runs. Every statistic: ``utils.compare.stats``.
- ``results.md``: one sentence on which strategies are best, then the same for reading, plus one table
  per class whose verdicts are corrected over all (class, strategy) tests together.
- ``map_vs_epoch.png`` (mean over seeds with a min-max band), ``points.png`` (one dot per seed, the
  mean and its interval) and ``pr_curves.png`` (each strategy's PR curve of one seed, side by side).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.compare.factors import factor_section
from utils.compare.pack import Progress
from utils.compare.runs import RunRecord
from utils.compare.stats import (ALPHA, BestSet, Look, Outcome, best_sentence, best_set, class_verdicts, mean_ci,
                                 one_look, verdicts, welch)

SPEED = (("train_images_per_s", "train_img_s", 1), ("loss_step_ms", "loss_ms_step", 1), ("peak_memory_mib", "peak_mib", 0))


def fmt(x: float, digits: int = 3) -> str:
    """A number for the tables; NaN (not estimable from one seed) is an empty cell."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def class_names(records: list[RunRecord]) -> list[str]:
    return sorted({c for r in records for c in r.ap})


def runs_table(records: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """runs.csv: header and one row per finished run, in start order."""
    classes = class_names(records)
    header = ["loss", "seed", "epochs", "precision", "map50", "map", *[f"ap_{c}" for c in classes],
              "collapsed", "started", "finished", "train_s"]
    rows = []
    for r in sorted(records, key=lambda r: (r.started, r.loss, r.seed)):
        rows.append([r.loss, str(r.seed), str(r.epochs), str(r.settings.get("precision", "")),
                     f"{r.map50:.5f}", f"{r.map:.5f}",
                     *[f"{r.ap[c]:.5f}" if c in r.ap else "" for c in classes],
                     ";".join(r.collapsed), f"{r.started:.3f}", f"{r.finished:.3f}", f"{r.train_s:.1f}"])
    return header, rows


@dataclass(frozen=True)
class Context:
    """What a report says beyond its runs. ``note``: replaces the line on looks; ``progress``: where the
    runs stand while they train; ``pending_look``: set while a look of ``--seeds auto`` is not complete
    (``look 2 of 4 (5 seeds)``): no verdict, p-value or best call is made before it is; ``hopeless``:
    strategies ``--seeds auto`` stopped as hopeless (never ``best: yes``); ``advice``: what to do next."""
    note: str = ""
    progress: Progress | None = None
    pending_look: str = ""
    hopeless: tuple[str, ...] = ()
    advice: str = ""


@dataclass(frozen=True)
class Decisions:
    """Every statistical call of one report: verdicts against the baseline, the best set, the per-class
    verdicts (one family), the looks they were corrected over and alpha."""
    overall: dict[str, tuple[Outcome, str]]
    best: BestSet | None
    classes: dict[tuple[str, str], tuple[Outcome, str]]
    looks: list[Look]
    alpha: float


def by_strategy(records: list[RunRecord], losses: list[str], value=lambda r: r.map) -> dict[str, dict[int, float]]:
    """strategy -> seed -> value (runs without a value, e.g. a class they never saw, left out)."""
    out: dict[str, dict[int, float]] = {loss: {} for loss in losses}
    for r in records:
        v = value(r)
        if r.loss in out and v is not None:
            out[r.loss][r.seed] = v
    return out


def decide(records: list[RunRecord], losses: list[str], looks: list[Look] | None = None,
           alpha: float = ALPHA) -> Decisions:
    """The verdicts, best set and per-class verdicts of these runs (``looks``: one look at everything
    when not given)."""
    runs = by_strategy(records, losses)
    looks = one_look(runs) if looks is None else looks
    present = {s: v for s, v in runs.items() if v}
    overall = verdicts(runs, losses[0], looks, alpha) if losses and runs[losses[0]] else {}
    per_class = {c: by_strategy(records, losses, lambda r, c=c: r.ap.get(c)) for c in class_names(records)}
    classes = class_verdicts(per_class, losses[0], looks, alpha) if losses else {}
    return Decisions(overall, best_set(present, looks, alpha) if present else None, classes, looks, alpha)


def compare_cells(base: list[float], values: list[float], is_base: bool,
                  decided: tuple[Outcome, str] | None) -> dict[str, str]:
    """diff, its interval, raw and adjusted p and the verdict of ``values`` against ``base`` as cells."""
    empty = {"diff": "", "diff_ci_low": "", "diff_ci_high": "", "p": "", "p_adj": "", "verdict": ""}
    if is_base:
        return {**empty, "verdict": "baseline"}
    if not values or not base or decided is None:
        return empty
    outcome, words = decided
    cells = {**empty, "diff": fmt(outcome.diff), "p_adj": fmt(outcome.p_adj, 4), "verdict": words}
    if len(values) >= 2 and len(base) >= 2:
        d = welch(base, values)
        cells.update({"diff_ci_low": fmt(d.low), "diff_ci_high": fmt(d.high), "p": fmt(d.p, 4)})
    return cells


def strategy_rows(records: list[RunRecord], losses: list[str], status: dict[str, tuple[int, list[str]]],
                  decided: Decisions, context: Context = Context()) -> list[dict[str, str]]:
    """results.csv rows; ``status[loss]`` = (runs planned, names of failed runs)."""
    classes = class_names(records)
    by_loss = {loss: [r for r in records if r.loss == loss] for loss in losses}
    base = [r.map for r in by_loss[losses[0]]] if losses else []
    rows = []
    for i, loss in enumerate(losses):
        runs = by_loss[loss]
        planned, failed = status.get(loss, (len(runs), []))
        row = {"loss": loss, "n": str(len(runs)), "planned": str(planned)}
        m50, m = (mean_ci([getattr(r, k) for r in runs]) if runs else None for k in ("map50", "map"))
        row.update({"map50_mean": fmt(m50.mean) if m50 else "", "map50_std": fmt(m50.std) if m50 else "",
                    "map_mean": fmt(m.mean) if m else "", "map_std": fmt(m.std) if m else "",
                    "map_ci_low": fmt(m.low) if m else "", "map_ci_high": fmt(m.high) if m else ""})
        cells = compare_cells(base, [r.map for r in runs], i == 0, decided.overall.get(loss))
        row.update({f"map_{k}" if k != "verdict" else k: v for k, v in cells.items()})
        if context.pending_look and i > 0:
            row["verdict"] = f"{context.pending_look} not complete"
        row["best"] = "" if decided.best is None or not runs else "no (hopeless)" if loss in context.hopeless \
            else "yes" if loss in decided.best.best else "no"
        for c in classes:
            ap = [r.ap[c] for r in runs if c in r.ap]
            ci = mean_ci(ap) if ap else None
            row[f"ap_{c}_mean"] = fmt(ci.mean) if ci else ""
            row[f"ap_{c}_std"] = fmt(ci.std) if ci else ""
            row[f"collapsed_{c}"] = str(sum(c in r.collapsed for r in runs))
        for key, col, digits in SPEED:
            vals = [r.speed[key] for r in runs if key in r.speed]
            row[col] = f"{np.mean(vals):.{digits}f}" if vals else ""
        row["failed"] = ";".join(failed)
        rows.append(row)
    return rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def pm(mean: str, std: str) -> str:
    return f"{mean} ± {std}" if std else mean or "-"


def interval(low: str, high: str) -> str:
    return f"[{low}, {high}]" if low else "-"


def class_table(records: list[RunRecord], losses: list[str], c: str, decided: Decisions,
                pending: str = "") -> list[str]:
    """results.md: one class's AP50-95 per strategy, against the baseline, and its collapsed runs."""
    base = [r.ap[c] for r in records if r.loss == losses[0] and c in r.ap]
    rows = []
    for i, loss in enumerate(losses):
        runs = [r for r in records if r.loss == loss]
        ap = [r.ap[c] for r in runs if c in r.ap]
        ci = mean_ci(ap) if ap else None
        cells = compare_cells(base, ap, i == 0, decided.classes.get((c, loss)))
        rows.append([loss, str(len(ap)), pm(fmt(ci.mean), fmt(ci.std)) if ci else "-",
                     interval(fmt(ci.low), fmt(ci.high)) if ci else "-",
                     f"{cells['diff']} {interval(cells['diff_ci_low'], cells['diff_ci_high'])}".strip() or "-",
                     cells["p"] or "-", cells["p_adj"] or "-",
                     cells["verdict"] or (f"{pending} not complete" if pending else "-"),
                     f"{sum(c in r.collapsed for r in runs)} of {len(runs)}"])
    return [f"### {c}", "", *md_table(["loss", "n", "AP50-95", "95 % CI", "diff vs " + losses[0] + " [95 % CI]",
                                       "p", "p adj (classes x strategies)", "verdict", "collapsed"], rows), ""]


def headline(records: list[RunRecord], losses: list[str], decided: Decisions, context: Context) -> list[str]:
    """results.md's opening lines: which strategies are best (or, while a look is incomplete, where its
    runs stand), what to do next, and the progress of the runs."""
    data = str(records[0].settings.get("dataset", "the data")) if records else "the data"
    if context.pending_look:
        look = context.pending_look[0].upper() + context.pending_look[1:]
        where = (f"{look} in progress: {context.progress.words()}." if context.progress else
                 f"{look} is not complete; the same command trains the rest (failed runs are tried again).")
        lines = [f"{where} Verdicts, p-values and the best column come when the look is complete: alpha is spent "
                 "only at the planned looks."]
    elif decided.best:
        lines = [best_sentence(by_strategy(records, losses), decided.best, data, decided.alpha, context.hopeless)]
    else:
        lines = ["No finished run yet."]
    if context.advice:
        lines += ["", context.advice]
    if context.progress and not context.pending_look:
        lines += ["", f"Progress: {context.progress.words()}."]
    return lines


def looks_note(looks: list[Look], note: str) -> list[str]:
    """What the verdicts were corrected for, as results.md lines."""
    if note:
        return [note, ""]
    if len(looks) > 1:
        return [f"Looked at {len(looks)} times (compare.json): alpha is split equally over the looks, which "
                "covers looks planned in advance but not seeds added because an earlier look was unresolved; "
                "for a guarantee that covers adding seeds, use `--seeds auto`.", ""]
    return []


def write_results(exp: Path, records: list[RunRecord], losses: list[str], status: dict[str, tuple[int, list[str]]],
                  command: str, decided: Decisions, context: Context = Context()) -> None:
    """runs.csv, results.csv and results.md in ``exp``."""
    write_csv(exp / "runs.csv", *runs_table(records))
    rows = strategy_rows(records, losses, status, decided, context)
    header = list(rows[0]) if rows else ["loss"]
    write_csv(exp / "results.csv", header, [[r[k] for k in header] for r in rows])
    base, a = losses[0] if losses else "-", decided.alpha
    md = [*headline(records, losses, decided, context), "", f"Command: `{command}`", "",
          *looks_note(decided.looks, context.note),
          f"mAP50-95 of best.pt, mean ± std over seeds, 95 % t interval of the mean; difference against the "
          f"baseline `{base}` with Welch's 95 % interval and two-sided p. Verdicts: better / worse when the "
          f"p adjusted by Holm over all {max(len(losses) - 1, 0)} comparisons with the baseline is below {a:g}; "
          f"best: not resolved below any other strategy (Holm over all pairs). In each column the chance of "
          f"even one false call is at most {a:g}.", ""]
    md += md_table(["loss", "runs", "mAP50", "mAP50-95", "95 % CI", f"diff vs {base} [95 % CI]",
                    "p", "p adj", "verdict", "best", "train img/s", "failed"],
                   [[r["loss"], f"{r['n']}/{r['planned']}", pm(r["map50_mean"], r["map50_std"]),
                     pm(r["map_mean"], r["map_std"]), interval(r["map_ci_low"], r["map_ci_high"]),
                     f"{r['map_diff']} {interval(r['map_diff_ci_low'], r['map_diff_ci_high'])}".strip() if r["map_diff"] else "-",
                     r["map_p"] or "-", r["map_p_adj"] or "-", r["verdict"] or "-", r["best"] or "-",
                     r["train_img_s"] or "-", r["failed"].replace(";", ", ")]
                    for r in rows])
    split = factor_section(by_strategy(records, losses), losses[0], decided.looks, a) \
        if losses and not context.pending_look else []
    md += ["", *split] if split else []
    classes = class_names(records)
    if classes and losses:
        md += ["", "## Per class (AP50-95; collapsed = recall 0 at the best-F1 threshold)", "",
               f"Verdicts per class: Holm over all {len(decided.classes)} (class, strategy) comparisons with "
               f"the baseline together, at {a:g}.", ""]
        for c in classes:
            md += class_table(records, losses, c, decided, context.pending_look)
        collapsed = [f"{c} collapsed in {n} of {len(runs)} {loss} runs" for loss in losses
                     for runs in [[r for r in records if r.loss == loss]] for c in classes
                     if (n := sum(c in r.collapsed for r in runs))]
        md += ["Collapsed: " + ("; ".join(collapsed) if collapsed else "none") + "."]
    (exp / "results.md").write_text("\n".join(md) + "\n")


def plot_results(exp: Path, records: list[RunRecord], losses: list[str]) -> None:
    """map_vs_epoch.png (mean over seeds, min-max band), points.png (dots per seed, mean and CI) and
    pr_curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), tight_layout=True)
    for loss in losses:
        curves = [r.curve for r in records if r.loss == loss and r.curve]
        if curves:
            n = min(len(c) for c in curves)
            a = np.array([c[:n] for c in curves])  # (seeds, epochs)
            (line,) = ax.plot(range(n), a.mean(0), label=f"{loss} (n={len(a)})", linewidth=2)
            ax.fill_between(range(n), a.min(0), a.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xlabel="epoch", ylabel="mAP50-95", title="validation mAP50-95: mean over seeds, band = min-max")
    if ax.lines:
        ax.legend()
    fig.savefig(exp / "map_vs_epoch.png", dpi=150)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(losses) + 2), 4.5), tight_layout=True)
    rng = np.random.default_rng(0)  # fixed jitter: the same runs give the same picture
    for i, loss in enumerate(losses):
        maps = [r.map for r in records if r.loss == loss]
        if not maps:
            continue
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(maps)), maps, s=18, color="tab:blue", alpha=0.7, zorder=3)
        ci = mean_ci(maps)
        yerr = None if math.isnan(ci.low) else [[ci.mean - ci.low], [ci.high - ci.mean]]
        ax.errorbar(i + 0.3, ci.mean, yerr=yerr, fmt="D", color="black", capsize=4, zorder=4)
    ax.set_xticks(range(len(losses)), losses)
    ax.set(ylabel="mAP50-95 of best.pt", title="one dot per seed; diamond = mean, bar = 95 % CI")
    fig.savefig(exp / "points.png", dpi=150)
    plt.close(fig)

    firsts = [next((r for r in records if r.loss == loss and (r.folder / "PR_curve.png").exists()), None)
              for loss in losses]
    firsts = [r for r in firsts if r is not None]
    if firsts:
        fig, axes = plt.subplots(1, len(firsts), figsize=(5 * len(firsts), 4), squeeze=False)
        for ax, r in zip(axes[0], firsts):
            ax.imshow(plt.imread(r.folder / "PR_curve.png"))
            ax.set_title(f"{r.loss} seed {r.seed}")
            ax.axis("off")
        fig.savefig(exp / "pr_curves.png", dpi=150, bbox_inches="tight")
        plt.close(fig)


def write_report(exp: Path, records: list[RunRecord], losses: list[str], status: dict[str, tuple[int, list[str]]],
                 command: str, plots: bool = True, looks: list[Look] | None = None, alpha: float = ALPHA,
                 note: str = "", progress: Progress | None = None, context: Context | None = None) -> Decisions:
    """All tables (and with ``plots`` the plots) of a comparison into ``exp``; the verdicts are corrected
    over ``looks`` (one look at every run when not given). ``note`` replaces the line on looks; ``context``
    (``Context``) adds the rest, ``progress`` included."""
    context = context or Context(note=note, progress=progress)
    if context.pending_look:  # nothing is tested before the look is complete
        decided = Decisions({}, None, {}, list(looks or []), alpha)
    else:
        decided = decide(records, losses, looks, alpha)
    write_results(exp, records, losses, status, command, decided, context)
    if plots:
        plot_results(exp, records, losses)
    return decided


__all__ = ["write_report", "decide", "Decisions", "Context", "by_strategy", "runs_table", "strategy_rows", "write_results",
           "plot_results"]
