"""``--seeds auto``: every strategy to 3 seeds, then rounds of more seeds only where the verdict is open.

The decisions are replayed from the finished runs each time (``utils.compare.stats.auto_rounds``), so a
rerun, or ``--plan`` after the planned lines ran elsewhere, goes on where the procedure stopped. While a
look's runs train, the tables hold every finished run the procedure has asked for (its looks so far and
the look in progress), ``runs`` as finished / asked, and no verdict: alpha is spent only at complete looks.
compare.json keeps the cap and the last calls, so that raising ``--max-seeds`` says which stopped
strategies it reopened.
"""
from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

from utils.compare.driver import (Job, absolute_paths, comparison_lock, job_command, make_jobs, read_jobs,
                                  run_pending, status_of, unique_strategies)
from utils.compare.pack import Progress
from utils.compare.report import Context, by_strategy, write_report
from utils.compare.state import read_state, write_state
from utils.compare.stats import ALPHA, Round, auto_rounds, best_sentence, seed_schedule, settle, spending

LOGGER = logging.getLogger(__name__)
HOPELESS = "hopeless"  # the start of auto_rounds' reason for a futility stop


def auto_state(exp: Path, losses: list[str], max_seeds: int, alpha: float) -> tuple[list[Job], Round]:
    """Every job ``--seeds auto`` could ask for (read back) and the replayed round (``auto_rounds``)."""
    todo = make_jobs(exp, losses, list(range(max_seeds)))
    read_jobs(todo, exp)
    runs = {loss: {j.seed: j.record.map for j in todo if j.loss == loss and j.record} for loss in losses}
    return todo, auto_rounds(runs, losses, max_seeds, alpha)


def look_jobs(todo: list[Job], rnd: Round, max_seeds: int) -> list[Job]:
    """Every job of the look ``rnd`` waits for (its active strategies, seeds 0..n-1), finished or not."""
    if not rnd.active:
        return []
    n = seed_schedule(max_seeds)[len(rnd.looks)]
    return [j for j in todo if j.loss in rnd.active and j.seed < n]


def auto_needed(todo: list[Job], rnd: Round, max_seeds: int) -> list[Job]:
    """The jobs the next look of ``rnd`` still needs."""
    return [j for j in look_jobs(todo, rnd, max_seeds) if j.status != "done"]


def asked_jobs(todo: list[Job], rnd: Round, max_seeds: int) -> list[Job]:
    """The jobs ``--seeds auto`` asked for: those of its looks and of the look in progress."""
    asked = {(loss, s) for look in rnd.looks for loss, seeds in look.seeds.items() for s in seeds}
    asked |= {(j.loss, j.seed) for j in look_jobs(todo, rnd, max_seeds)}
    return [j for j in todo if (j.loss, j.seed) in asked]


def look_label(rnd: Round, max_seeds: int) -> str:
    """``look 2 of 4 (5 seeds)``: the look ``rnd`` waits for."""
    sched = seed_schedule(max_seeds)
    k = len(rnd.looks)
    return f"look {k + 1} of {len(sched)} ({sched[k]} seeds)"


def hopeless_of(rnd: Round) -> tuple[str, ...]:
    return tuple(s for s, why in rnd.stopped.items() if why.startswith(HOPELESS))


def reopened_by_cap(exp: Path, rnd: Round, max_seeds: int) -> list[str]:
    """compare.json's notes on strategies a higher ``--max-seeds`` reopened (their futility was judged
    against the old cap), this command's included."""
    auto = read_state(exp).get("auto") or {}
    notes = list(auto.get("reopened", []))
    old = auto.get("max_seeds")
    if isinstance(old, int) and max_seeds > old:
        again = [s for s, why in auto.get("stopped", {}).items() if why.startswith(HOPELESS)
                 and not rnd.stopped.get(s, "").startswith(HOPELESS)]
        if again:
            notes.append(f"Raising --max-seeds from {old} to {max_seeds} reopened {', '.join(again)}: stopped as "
                         f"hopeless at a cap of {old}, where its gap to the leader would rarely have been resolved; "
                         f"at {max_seeds} seeds it might be.")
    return notes


def remember(exp: Path, rnd: Round, max_seeds: int, notes: list[str]) -> None:
    """Keep the cap, the calls and the reopen notes in compare.json for the next command."""
    state = read_state(exp)
    state["auto"] = {"max_seeds": max_seeds, "stopped": dict(rnd.stopped), "reopened": notes}
    write_state(exp, state)


def auto_note(rnd: Round, max_seeds: int, alpha: float, notes: list[str]) -> str:
    """results.md's lines on how ``--seeds auto`` spent seeds and alpha."""
    sched = seed_schedule(max_seeds)
    shares = ", ".join(f"{n}: {alpha * w:.4f}" for n, w in zip(sched, spending(sched)))
    stops = "; ".join(f"{k}: {v}" for k, v in rnd.stopped.items()) or "none yet"
    return " ".join([f"Seeds chosen by `--seeds auto` (cap {max_seeds}): looks at {len(rnd.looks)} of the seed "
                     f"counts {sched}, alpha spent per look ({shares}; spending alpha * t^2), so the family-wise "
                     f"error of the whole procedure is at most {alpha:g}. Stopped: {stops}.", *notes])


def with_max_seeds(command: str, n: int) -> str:
    """``command`` with ``--max-seeds n`` (replaced, or added)."""
    if re.search(r"--max-seeds[ =]\d+", command):
        return re.sub(r"--max-seeds[ =]\d+", f"--max-seeds {n}", command)
    return f"{command} --max-seeds {n}"


def cap_advice(todo: list[Job], rnd: Round, losses: list[str], max_seeds: int, command: str, alpha: float) -> str:
    """When the cap ended the procedure with the best set unresolved: how many seeds would settle it and
    the command that goes on; '' otherwise."""
    if rnd.active or len(rnd.looks) < len(seed_schedule(max_seeds)) or len(rnd.best.best) < 2:
        return ""
    used = asked_jobs(todo, rnd, max_seeds)
    runs = {s: v for s, v in by_strategy([j.record for j in used if j.record], losses).items() if v}
    # the closest open gap; where only hopeless strategies are left open, theirs (a higher cap reopens them)
    found = settle(runs, rnd.best, alpha, hopeless_of(rnd)) or settle(runs, rnd.best, alpha)
    cap = f"The cap of {max_seeds} seeds per strategy was reached with the best not resolved"
    reopen = ("; a higher cap can also reopen strategies stopped as hopeless, which were judged against the cap"
              if hopeless_of(rnd) else "")
    if found is None or found.seeds is None:
        return f"{cap}, and no practical number of seeds would settle the gap between the leaders{reopen}."
    n = max(found.seeds, max_seeds + 1)
    return (f"{cap}: about {n} seeds per strategy in all ({n - max_seeds} more) would settle "
            f"{found.runner} against {rnd.best.leader}. To go on: `{with_max_seeds(command, n)}`{reopen}.")


def last_look_sentence(todo: list[Job], rnd: Round, losses: list[str], alpha: float) -> str:
    """While a look trains: what the last complete one said, on the seeds it held ('' before the first)."""
    if not rnd.looks:
        return ""
    seeds = {(loss, s) for look in rnd.looks for loss, held in look.seeds.items() for s in held}
    runs = {k: v for k, v in by_strategy([j.record for j in todo if j.record and (j.loss, j.seed) in seeds],
                                         losses).items() if v}
    data = next((str(j.record.settings.get("dataset")) for j in todo if j.record), "the data")
    return f"At look {len(rnd.looks)}: {best_sentence(runs, rnd.best, data, alpha, hopeless_of(rnd))}"


def write_auto_report(exp: Path, todo: list[Job], losses: list[str], rnd: Round, max_seeds: int, command: str,
                      alpha: float, plots: bool = True, progress: Progress | None = None,
                      notes: list[str] | None = None) -> None:
    """The tables of an adaptive comparison: every run its looks asked for (the look in progress too),
    corrected over its complete looks; no verdict while a look is incomplete."""
    used = asked_jobs(todo, rnd, max_seeds)
    advice = (last_look_sentence(todo, rnd, losses, alpha) if rnd.active
              else cap_advice(todo, rnd, losses, max_seeds, command, alpha))
    context = Context(note=auto_note(rnd, max_seeds, alpha, notes or []), progress=progress,
                      pending_look=look_label(rnd, max_seeds) if rnd.active else "", hopeless=hopeless_of(rnd),
                      advice=advice)
    write_report(exp, [j.record for j in used if j.record is not None], losses, status_of(used), command,
                 plots, list(rnd.looks) or None, alpha, context=context)


def compare_auto(exp: Path, losses: list[str], max_seeds: int, train_args: list[str], workers: int, command: str,
                 jobs: int | str = "auto", train: bool = True, alpha: float = ALPHA, backend=None) -> list[Job]:
    """``--seeds auto``: every strategy to 3 seeds, then rounds of more seeds for the strategies still
    unresolved and not hopeless, up to ``max_seeds`` (``utils.compare.stats.auto_rounds``). Rerunning
    replays the decisions from the finished runs and goes on where it stopped. Returns the jobs the
    procedure asked for (a failed one stops it; the same command retries). ``backend``: see
    ``utils.compare.driver.launch``."""
    losses = unique_strategies(losses)
    with comparison_lock(exp):
        todo, rnd = auto_state(exp, losses, max_seeds, alpha)
        notes = reopened_by_cap(exp, rnd, max_seeds)
        for line in notes:
            LOGGER.info(line)
        failed: set[str] = set()
        while train and auto_needed(todo, rnd, max_seeds) and not failed:
            look = look_jobs(todo, rnd, max_seeds)
            label = look_label(rnd, max_seeds)
            LOGGER.info("--seeds auto: %s for %s", label, ", ".join(rnd.active))
            write_auto_report(exp, todo, losses, rnd, max_seeds, command, alpha, plots=False, notes=notes)
            run_pending(look, train_args, workers, jobs, lambda p, rnd=rnd: write_auto_report(
                exp, todo, losses, rnd, max_seeds, command, alpha, plots=False, progress=p, notes=notes), label,
                backend=backend)
            failed = {j.name for j in look if j.status == "failed"}
            todo, rnd = auto_state(exp, losses, max_seeds, alpha)
            for j in todo:
                j.status = "failed" if j.name in failed else j.status
        write_auto_report(exp, todo, losses, rnd, max_seeds, command, alpha, notes=notes)
        remember(exp, rnd, max_seeds, notes)
    LOGGER.info("\n%s", (exp / "results.md").read_text())
    LOGGER.info("Results saved to %s", exp)
    return asked_jobs(todo, rnd, max_seeds)


def plan_auto(exp: Path, losses: list[str], max_seeds: int, train_args: list[str], workers: int,
              alpha: float = ALPHA) -> list[str]:
    """``--plan`` with ``--seeds auto``: the train.py lines of the runs the next look needs, given the
    runs already finished in ``exp`` (run them, then ask again; nothing printed when it is settled).
    ``exp`` must exist with its compare.json, so that the next ``--plan`` finds these runs."""
    losses = unique_strategies(losses)
    todo, rnd = auto_state(exp, losses, max_seeds, alpha)
    return [shlex.join(absolute_paths(job_command(j, train_args, workers))) for j in auto_needed(todo, rnd, max_seeds)]


__all__ = ["compare_auto", "plan_auto", "write_auto_report", "auto_state", "asked_jobs", "look_jobs"]
