"""Train several loss strategies on the same data, model, schedule and seeds, and tabulate them.

Each (strategy, seed) is one train.py process writing ``<exp>/runs/<loss>-s<seed>/``; a process that
dies is reported as failed and the others go on. Rerunning the same command resumes: finished runs
(a ``summary.json``) are read back, interrupted ones continue from their ``last.pt``. Several runs go
at once per device with ``jobs`` (``utils.compare.pack``); ``plan`` gives the commands to run
elsewhere and ``report`` tabulates run folders wherever they ran.

Outputs in ``<exp>/`` (``utils.compare.report``): ``runs.csv`` (one row per finished run),
``results.csv`` / ``results.md`` (per strategy: mean, std, 95 % interval, difference against the first
strategy with Welch's interval, p and a verdict; per class; collapsed classes), ``map_vs_epoch.png``,
``points.png`` and ``pr_curves.png``.
"""
from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from utils.compare.pack import Packer, eta_seconds, progress_line
from utils.compare.report import write_report
from utils.compare.runs import RunRecord, find_runs, note_end, note_start, read_run
from utils.engine.hyp import HYP_DIR, find_hyp, load_hyp
from utils.io.checkpoint import CheckpointError, read_checkpoint
from utils.loss import loss_class

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def hyp_trains(spec: str | Path, loss: str) -> Path:
    """The hyp file ``spec`` (path or bare name in hyp/), checked to train ``loss``; ValueError if not."""
    path = find_hyp(spec)
    declared = load_hyp(path).get("loss", "yolov5")
    if declared != loss:
        raise ValueError(f"{path} trains loss '{declared}', expected '{loss}'")
    return path


def hyp_for(loss: str) -> Path:
    """The hyp file of a strategy: hyp/hyp.<loss>.yaml, or hyp.scratch.yaml for ``yolov5``."""
    loss_class(loss)  # unknown name -> ValueError listing the choices
    return hyp_trains("hyp.scratch.yaml" if loss == "yolov5" else f"hyp.{loss}.yaml", loss)


@dataclass
class Job:
    loss: str
    seed: int
    run_dir: Path
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
    for loss in losses:
        hyp_for(loss)  # fail before any training when a strategy or its hyp file is missing
    return [Job(loss, seed, exp / "runs" / f"{loss}-s{seed}") for seed in seeds for loss in losses]


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
            "--hyp", str(hyp_for(job.loss)), "--seed", str(job.seed), "--project", str(job.run_dir.parent),
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
    return [shlex.join(absolute_paths(job_command(j, train_args, workers))) for j in make_jobs(exp, losses, seeds)]


def status_of(jobs: list[Job]) -> dict[str, tuple[int, list[str]]]:
    """loss -> (runs planned, names of failed runs), for the tables."""
    out: dict[str, tuple[int, list[str]]] = {}
    for j in jobs:
        n, failed = out.get(j.loss, (0, []))
        out[j.loss] = (n + 1, failed + [j.name] if j.status == "failed" else failed)
    return out


def run_pending(jobs: list[Job], train_args: list[str], workers: int, n_jobs: int | str,
                report: Callable[[], None]) -> None:
    """Train the pending jobs, ``n_jobs`` at once per device ("auto": from a probe run's memory on
    CUDA, 1 on CPU); after each one ends log its line and the overall bar, and rewrite the tables."""
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

    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    Packer(n_jobs, gpus, workers, command, ROOT).run(pending, finished)


def compare(exp: Path, losses: list[str], seeds: list[int], train_args: list[str], workers: int, command: str,
            jobs: int | str = "auto", train: bool = True) -> list[Job]:
    """Train (or resume, or read back) every (loss, seed) and write the tables and plots into ``exp``.

    ``train=False`` only reads back the finished runs and writes the tables (the rest stay pending)."""
    todo = make_jobs(exp, losses, seeds)
    for j in todo:
        j.read()

    def report(plots: bool = True) -> None:
        write_report(exp, [j.record for j in todo if j.record is not None], losses, status_of(todo), command, plots)

    if train:
        # tables after every run (cheap, and current while the rest train), plots once at the end
        run_pending(todo, train_args, workers, jobs, lambda: report(plots=False))
    report()
    LOGGER.info("\n%s", (exp / "results.md").read_text())
    LOGGER.info("Results saved to %s", exp)
    return todo


def report_dirs(exp: Path, dirs: list[Path], losses: list[str], command: str) -> list[RunRecord]:
    """Tables and plots in ``exp`` from the finished runs under ``dirs`` (see ``find_runs`` for the
    errors). Strategies in ``losses`` order first (the first one found is the baseline), others after."""
    records = find_runs(dirs)
    found = {r.loss for r in records}
    order = [x for x in losses if x in found] + sorted(found - set(losses))
    status = {loss: (sum(r.loss == loss for r in records), []) for loss in order}
    exp.mkdir(parents=True, exist_ok=True)
    write_report(exp, records, order, status, command)
    LOGGER.info("\n%s", (exp / "results.md").read_text())
    LOGGER.info("Results of %d runs from %s saved to %s", len(records), ", ".join(map(str, dirs)), exp)
    return records


__all__ = ["compare", "plan", "report_dirs", "hyp_for", "job_command", "HYP_DIR"]
