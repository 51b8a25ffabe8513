"""Train several loss strategies on the same data, model, schedule and seeds, and tabulate them.

Each (strategy, seed) is one train.py process writing ``<exp>/runs/<loss>-s<seed>/``; a process that
dies is reported as failed and the others go on. Rerunning the same command resumes: finished runs
(a ``summary.json``) are read back, interrupted ones continue from their ``last.pt``. Several runs go
at once per device with ``jobs`` (``utils.compare.pack``); ``plan`` gives the commands to run
elsewhere and ``report`` tabulates run folders wherever they ran.

Outputs in ``<exp>/`` (``utils.compare.report``): ``runs.csv`` (one row per finished run),
``results.csv`` / ``results.md`` (per strategy: mean, std, 95 % interval, difference against the first
strategy with Welch's interval, p, the family-wise adjusted p and a verdict, and whether it is among the
best; per class; collapsed classes), ``map_vs_epoch.png``, ``points.png`` and ``pr_curves.png``.

``compare_auto`` (``--seeds auto``) decides the seeds itself in rounds (``utils.compare.stats.auto_rounds``);
``compare`` with fixed seeds records each completed set of runs as a look in ``compare.json`` so that the
report can correct for seeds added by hand.
"""
from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml

from utils.compare.pack import Packer, eta_seconds, progress_line
from utils.compare.report import write_report
from utils.compare.runs import RunRecord, find_runs, note_end, note_start, read_run
from utils.compare.stats import ALPHA, Look, auto_rounds, seed_schedule, spending
from utils.engine.hyp import HYP_DIR, find_hyp, load_hyp
from utils.io.checkpoint import CheckpointError, read_checkpoint
from utils.io.paths import write_atomic
from utils.loss import canonical_strategies, loss_class, split_strategy

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def hyp_trains(spec: str | Path, loss: str) -> Path:
    """The hyp file ``spec`` (path or bare name in hyp/), checked to train ``loss``; ValueError if not."""
    path = find_hyp(spec)
    declared = load_hyp(path).get("loss", "yolov5")
    if declared != loss:
        raise ValueError(f"{path} trains loss '{declared}', expected '{loss}'")
    return path


def hyp_for(name: str, folder: Path | None = None) -> Path:
    """The hyp file of a strategy: its class's ``hyp_file`` in hyp/ (unknown name -> ValueError listing
    the choices); for ``loss+assigner`` that file with the assigner set, written into ``folder``."""
    loss, assigner = split_strategy(name)
    path = hyp_trains(loss_class(loss).hyp_file, loss)
    if assigner is None:
        return path
    if folder is None:
        raise ValueError(f"strategy '{name}' needs a folder for its hyp file")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"hyp.{name}.yaml"
    out.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "assigner": assigner}, sort_keys=False))
    return out


@dataclass
class Job:
    loss: str
    seed: int
    run_dir: Path
    hyp: Path  # its hyp file (see hyp_for)
    status: str = "pending"  # pending | done | failed
    record: RunRecord | None = None
    error: str = ""

    @property
    def name(self) -> str:
        return f"{self.loss}-s{self.seed}"

    def read(self) -> None:
        self.record = read_run(self.run_dir)
        if self.record is not None:
            self.status = "done"


def make_jobs(exp: Path, losses: list[str], seeds: list[int]) -> list[Job]:
    """Seed-major: every strategy's first seed runs before any second one, so a comparison cut short
    still compares all strategies."""
    hyps = {loss: hyp_for(loss, exp) for loss in losses}  # fail before any training when one is missing
    return [Job(loss, seed, exp / "runs" / f"{loss}-s{seed}", hyps[loss]) for seed in seeds for loss in losses]


def job_command(job: Job, train_args: list[str], workers: int) -> list[str]:
    """The train.py command of a job: a resume (the run keeps its own options) when an unfinished
    last.pt is there, else a new run in ``job.run_dir``."""
    last = job.run_dir / "weights" / "last.pt"
    if last.exists():
        try:
            resumable = read_checkpoint(last).get("optimizer") is not None
        except CheckpointError:
            resumable = False
        if resumable:
            return [sys.executable, str(ROOT / "train.py"), "--resume", str(last), "--quiet"]
    return [sys.executable, str(ROOT / "train.py"), *train_args, "--workers", str(workers),
            "--hyp", str(job.hyp), "--seed", str(job.seed), "--project", str(job.run_dir.parent),
            "--name", job.run_dir.name, "--exist-ok", "--quiet"]


PATH_FLAGS = ("--data", "--cfg", "--hyp", "--weights", "--project", "--resume")


def absolute_paths(cmd: list[str]) -> list[str]:
    """``cmd`` with the value of every path flag made absolute: against the current folder when it names
    something there, else against the repository (where compare runs its trainings), so that the
    line runs the same from any folder (a cluster job's, ``/tmp``)."""
    out = list(cmd)
    for i in range(1, len(out)):
        if out[i - 1] in PATH_FLAGS and out[i] and not Path(out[i]).is_absolute():
            here = Path(out[i]).absolute()
            out[i] = str(here if here.exists() or not (ROOT / out[i]).exists() else ROOT / out[i])
    return out


def plan(exp: Path, losses: list[str], seeds: list[int], train_args: list[str], workers: int) -> list[str]:
    """One shell line per (strategy, seed): what ``compare`` would run there with ``--jobs 1``, every path
    absolute."""
    losses = canonical_strategies(losses)
    return [shlex.join(absolute_paths(job_command(j, train_args, workers))) for j in make_jobs(exp, losses, seeds)]


def status_of(jobs: list[Job]) -> dict[str, tuple[int, list[str]]]:
    """loss -> (runs planned, names of failed runs), for the tables."""
    out: dict[str, tuple[int, list[str]]] = {}
    for j in jobs:
        n, failed = out.get(j.loss, (0, []))
        out[j.loss] = (n + 1, failed + [j.name] if j.status == "failed" else failed)
    return out


def run_pending(jobs: list[Job], train_args: list[str], workers: int, n_jobs: int | str,
                report: Callable[[], None], backend=None) -> None:
    """Train the pending jobs, ``n_jobs`` at once per device ("auto": from a probe run's memory on
    CUDA, 1 on CPU); after each one ends log its line and the overall bar, and rewrite the tables.
    ``backend`` (``utils.compare.backend.Backend``; None = local) picks the packer and hears of each run."""
    pending = [j for j in jobs if j.status == "pending"]
    total, t0, finished_now = len(jobs), time.time(), 0

    def command(job: Job, w: int) -> list[str]:
        note_start(job.run_dir)
        return job_command(job, train_args, w)

    def finished(job: Job, returncode: int, log: Path) -> None:
        nonlocal finished_now
        note_end(job.run_dir)
        job.read()
        finished_now += 1
        if returncode == 0 and job.record is not None:
            r = job.record
            LOGGER.info("[%s] done in %s s: mAP50 %.3f  mAP50-95 %.3f%s", job.name, f"{r.train_s:.0f}", r.map50, r.map,
                        f"  (recall 0: {', '.join(r.collapsed)})" if r.collapsed else "")
        else:
            job.status = "failed"
            job.error = f"train.py exited with code {returncode}; see {log}"
            LOGGER.warning("[%s] failed: %s", job.name, job.error)
        done = sum(j.status != "pending" for j in jobs)
        elapsed = time.time() - t0
        LOGGER.info(progress_line(done, total, elapsed, eta_seconds(elapsed, finished_now, total - done)))
        report()
        if backend is not None:
            backend.run_finished(job.run_dir)

    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    (backend.packer if backend is not None else Packer)(n_jobs, gpus, workers, command, ROOT).run(pending, finished)


def read_state(exp: Path) -> dict:
    """compare.json as ``{"settings": {...}, "looks": [{loss: [seeds]}, ...]}`` (older files held the
    settings alone)."""
    f = exp / "compare.json"
    try:
        data = json.loads(f.read_text()) if f.exists() else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not valid JSON ({e}); delete it (its runs are kept) or pass --new") from None
    state = data if isinstance(data, dict) and "settings" in data else {"settings": data, "looks": []}
    looks = state.get("looks")
    if not isinstance(state["settings"], dict) or not isinstance(looks, list) or not all(
            isinstance(look, dict) and all(isinstance(v, list) for v in look.values()) for look in looks):
        raise ValueError(f"{f}: expected {{\"settings\": {{...}}, \"looks\": [{{loss: [seeds]}}, ...]}}; "
                         "delete it (its runs are kept) or pass --new")
    return state


def recorded_looks(exp: Path, jobs: list[Job]) -> tuple[list[Look], bool]:
    """The looks of a fixed-seed comparison: those in compare.json, then the finished runs now if they
    differ from the last one; alpha split equally. Also whether the present one is new (to record)."""
    looks = [{k: sorted(v) for k, v in look.items()} for look in read_state(exp)["looks"]]
    now: dict[str, list[int]] = {}
    for j in jobs:
        if j.status == "done":
            now.setdefault(j.loss, []).append(j.seed)
    now = {k: sorted(v) for k, v in now.items()}
    new = bool(now) and (not looks or looks[-1] != now)
    seen = looks + [now] if new else looks or [now]
    return [Look({k: tuple(v) for k, v in look.items()}, 1 / len(seen)) for look in seen], new


def record_look(exp: Path, jobs: list[Job]) -> None:
    """Append the finished runs now to compare.json's looks (a completed command is a look)."""
    state = read_state(exp)
    looks, new = recorded_looks(exp, jobs)
    if new and (exp / "compare.json").exists():
        state["looks"] = [{k: list(v) for k, v in look.seeds.items()} for look in looks]
        write_atomic(exp / "compare.json", json.dumps(state, indent=1))


def compare(exp: Path, losses: list[str], seeds: list[int], train_args: list[str], workers: int, command: str,
            jobs: int | str = "auto", train: bool = True, alpha: float = ALPHA, backend=None) -> list[Job]:
    """Train (or resume, or read back) every (loss, seed) and write the tables and plots into ``exp``.

    ``train=False`` only reads back the finished runs and writes the tables (the rest stay pending).
    A command that ends with every planned run finished is a look (recorded in compare.json); the
    verdicts are corrected over all looks of the folder."""
    losses = canonical_strategies(losses)  # gfl+atss is gfl: one row, one run folder
    todo = make_jobs(exp, losses, seeds)
    for j in todo:
        j.read()

    def report(plots: bool = True) -> None:
        looks, _ = recorded_looks(exp, todo)
        write_report(exp, [j.record for j in todo if j.record is not None], losses, status_of(todo), command,
                     plots, looks, alpha)

    if train:
        # tables after every run (cheap, and current while the rest train), plots once at the end
        run_pending(todo, train_args, workers, jobs, lambda: report(plots=False), backend)
    report()
    if all(j.status == "done" for j in todo):
        record_look(exp, todo)
    LOGGER.info("\n%s", (exp / "results.md").read_text())
    LOGGER.info("Results saved to %s", exp)
    return todo


def auto_state(exp: Path, losses: list[str], max_seeds: int, alpha: float) -> tuple[list[Job], object]:
    """Every job ``--seeds auto`` could ask for (read back) and the replayed round (``auto_rounds``)."""
    losses = canonical_strategies(losses)  # gfl+atss is gfl: one row, one run folder
    todo = make_jobs(exp, losses, list(range(max_seeds)))
    for j in todo:
        j.read()
    runs = {loss: {j.seed: j.record.map for j in todo if j.loss == loss and j.record} for loss in losses}
    return todo, auto_rounds(runs, losses, max_seeds, alpha)


def auto_needed(todo: list[Job], rnd, max_seeds: int) -> list[Job]:
    """The jobs the next look of ``rnd`` still needs (its active strategies, seeds 0..n-1)."""
    if not rnd.active:
        return []
    n = seed_schedule(max_seeds)[len(rnd.looks)]
    return [j for j in todo if j.loss in rnd.active and j.seed < n and j.status != "done"]


def auto_note(rnd, max_seeds: int, alpha: float) -> str:
    """results.md's line on how ``--seeds auto`` spent seeds and alpha."""
    sched = seed_schedule(max_seeds)
    shares = ", ".join(f"{n}: {alpha * w:.4f}" for n, w in zip(sched, spending(sched)))
    stops = "; ".join(f"{k}: {v}" for k, v in rnd.stopped.items()) or "none yet"
    return (f"Seeds chosen by `--seeds auto` (cap {max_seeds}): looks at {len(rnd.looks)} of the seed counts "
            f"{sched}, alpha spent per look ({shares}; spending alpha * t^2), so the family-wise error of "
            f"the whole procedure is at most {alpha:g}. Stopped: {stops}.")


def compare_auto(exp: Path, losses: list[str], max_seeds: int, train_args: list[str], workers: int, command: str,
                 jobs: int | str = "auto", train: bool = True, alpha: float = ALPHA, backend=None) -> list[Job]:
    """``--seeds auto``: every strategy to 3 seeds, then rounds of more seeds for the strategies still
    unresolved and not hopeless, up to ``max_seeds`` (``utils.compare.stats.auto_rounds``). Rerunning
    replays the decisions from the finished runs and goes on where it stopped. Returns the jobs the
    procedure asked for (a failed one stops it; the same command retries)."""
    losses = canonical_strategies(losses)
    todo, rnd = auto_state(exp, losses, max_seeds, alpha)
    failed: set[str] = set()
    while train and (needed := auto_needed(todo, rnd, max_seeds)) and not failed:
        LOGGER.info("--seeds auto: look %d at %d seeds for %s", len(rnd.looks) + 1,
                    seed_schedule(max_seeds)[len(rnd.looks)], ", ".join(rnd.active))
        run_pending(needed, train_args, workers, jobs,
                    lambda rnd=rnd: write_auto_report(exp, todo, losses, rnd, max_seeds, command, alpha, plots=False),
                    backend)
        failed = {j.name for j in needed if j.status == "failed"}
        todo, rnd = auto_state(exp, losses, max_seeds, alpha)
        for j in todo:
            j.status = "failed" if j.name in failed else j.status
    write_auto_report(exp, todo, losses, rnd, max_seeds, command, alpha)
    LOGGER.info("\n%s", (exp / "results.md").read_text())
    LOGGER.info("Results saved to %s", exp)
    return asked_jobs(todo, rnd, max_seeds)


def asked_jobs(todo: list[Job], rnd, max_seeds: int) -> list[Job]:
    """The jobs ``--seeds auto`` asked for: those of its looks and of the look it waits for."""
    asked = {(loss, s) for look in rnd.looks for loss, seeds in look.seeds.items() for s in seeds}
    asked |= {(j.loss, j.seed) for j in auto_needed(todo, rnd, max_seeds)}
    return [j for j in todo if (j.loss, j.seed) in asked]


def write_auto_report(exp: Path, todo: list[Job], losses: list[str], rnd, max_seeds: int, command: str,
                      alpha: float, plots: bool = True) -> None:
    """The tables of an adaptive comparison: only the runs its looks asked for, corrected over its looks."""
    used = asked_jobs(todo, rnd, max_seeds)
    write_report(exp, [j.record for j in used if j.record is not None], losses, status_of(used), command,
                 plots, list(rnd.looks) or None, alpha, auto_note(rnd, max_seeds, alpha))


def plan_auto(exp: Path, losses: list[str], max_seeds: int, train_args: list[str], workers: int,
              alpha: float = ALPHA) -> list[str]:
    """``--plan`` with ``--seeds auto``: the train.py lines of the runs the next look needs, given the
    runs already finished in ``exp`` (run them, then ask again; nothing printed when it is settled)."""
    todo, rnd = auto_state(exp, losses, max_seeds, alpha)
    return [shlex.join(absolute_paths(job_command(j, train_args, workers))) for j in auto_needed(todo, rnd, max_seeds)]


def report_dirs(exp: Path, dirs: list[Path], losses: list[str], command: str, alpha: float = ALPHA) -> list[RunRecord]:
    """Tables and plots in ``exp`` from the finished runs under ``dirs`` (see ``find_runs`` for the
    errors), as one look. Strategies in ``losses`` order first (the first one found is the baseline),
    others after."""
    losses = canonical_strategies(losses)
    records = find_runs(dirs)
    found = {r.loss for r in records}
    order = [x for x in losses if x in found] + sorted(found - set(losses))
    status = {loss: (sum(r.loss == loss for r in records), []) for loss in order}
    exp.mkdir(parents=True, exist_ok=True)
    write_report(exp, records, order, status, command, alpha=alpha,
                 note="The runs found are analysed as one look: seeds added after an earlier look at them are "
                      "not corrected for (`--seeds auto` is).")
    LOGGER.info("\n%s", (exp / "results.md").read_text())
    LOGGER.info("Results of %d runs from %s saved to %s", len(records), ", ".join(map(str, dirs)), exp)
    return records


__all__ = ["compare", "compare_auto", "plan", "plan_auto", "report_dirs", "hyp_for", "job_command", "HYP_DIR"]
