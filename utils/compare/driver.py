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

``utils.compare.auto`` (``--seeds auto``) decides the seeds itself in rounds; ``compare`` with fixed seeds
records each completed set of runs as a look in ``compare.json`` (``utils.compare.state``) so that the
report can correct for seeds added by hand. One compare process owns a comparison folder at a time
(``comparison_lock``); ``launch`` is the one place that starts runs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml

from utils.compare.pack import STOP_WAIT_S, Packer, Progress, eta_seconds
from utils.compare.report import write_report
from utils.compare.runs import RunRecord, check_same_settings, find_runs, note_end, note_start, read_run
from utils.compare.state import read_state, write_state
from utils.compare.stats import ALPHA, Look
from utils.core.yaml_file import load_yaml
from utils.hyp import HYP_DIR, find_hyp, load_hyp
from utils.io.checkpoint import CheckpointError, read_checkpoint
from utils.io.paths import RunLock, pid_alive
from utils.loss import canonical_strategies, loss_class, split_strategy, with_assigner

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
STRATEGY_KEYS = ("loss", "assigner")  # hyp keys that choose the strategy: compare's to set, not a dataset's


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
    out.write_text(yaml.safe_dump(with_assigner(yaml.safe_load(path.read_text()), assigner), sort_keys=False))
    return out


def unique_strategies(names: list[str]) -> list[str]:
    """``--losses`` as one row per strategy: each name canonical (``gfl+atss`` -> ``gfl``), and a name that
    is a strategy already listed dropped with one warning line (it would train the same runs twice)."""
    out: list[str] = []
    for given, canonical in zip(names, canonical_strategies(names)):
        if canonical in out:
            LOGGER.warning("--losses: '%s' is the strategy '%s' already listed; it is compared once", given, canonical)
        else:
            out.append(canonical)
    return out


def data_yaml(data: str | Path) -> Path:
    """The dataset YAML as train.py finds it: as given, else under the repository."""
    path = Path(data)
    return path if path.exists() or path.is_absolute() else ROOT / path


def dataset_train_defaults(data: str | Path) -> Any:
    """The dataset YAML's ``train_defaults`` (None when it has none or cannot be read: train.py says why).

    A ``loss`` or ``assigner`` under its ``hyp`` is refused (ValueError naming the file and key): it would
    turn every compared run into that one strategy while the tables label them by compare's names."""
    path = data_yaml(data)
    try:
        content = load_yaml(path) if path.is_file() else None
    except ValueError:
        return None
    defaults = content.get("train_defaults") if isinstance(content, dict) else None
    hyp = defaults.get("hyp") if isinstance(defaults, dict) else None
    for key in STRATEGY_KEYS:
        if isinstance(hyp, dict) and key in hyp:
            raise ValueError(f"{path}: train_defaults.hyp.{key} ({hyp[key]}) would make every compared run "
                             f"train that {key}; compare sets the strategy per run (--losses): remove the key")
    return defaults


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


def read_jobs(jobs: list[Job], exp: Path) -> None:
    """Read every job's finished run back; runs that differ in a compared setting (the dataset's
    ``train_defaults`` edited between two commands: epochs) are refused in one line, as ``--report`` does."""
    for j in jobs:
        j.read()
    check_same_settings([j.record for j in jobs if j.record is not None], str(exp))


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
    losses = unique_strategies(losses)
    return [shlex.join(absolute_paths(job_command(j, train_args, workers))) for j in make_jobs(exp, losses, seeds)]


def status_of(jobs: list[Job]) -> dict[str, tuple[int, list[str]]]:
    """loss -> (runs planned, names of failed runs), for the tables."""
    out: dict[str, tuple[int, list[str]]] = {}
    for j in jobs:
        n, failed = out.get(j.loss, (0, []))
        out[j.loss] = (n + 1, failed + [j.name] if j.status == "failed" else failed)
    return out


def wait_for_writer(run_dir: Path, wait_s: float = STOP_WAIT_S) -> None:
    """Wait until no live process holds ``run_dir``'s run lock (a train.py of a killed compare, stopping
    after the SIGTERM its parent's death sent it); still held after ``wait_s`` -> ValueError in one line."""
    lock, deadline = run_dir / ".lock", time.time() + wait_s
    while True:
        try:
            pid = int(lock.read_text().strip() or -1)
        except (OSError, ValueError):
            return
        if pid <= 0 or pid == os.getpid() or not pid_alive(pid):
            return
        if time.time() > deadline:
            raise ValueError(f"{run_dir} is still being trained by process {pid} (not started by this compare); "
                             "wait for it to end or stop it, then run the same command again")
        time.sleep(0.5)


def launch(pending: list[Job], train_args: list[str], workers: int, n_jobs: int | str,
           finished: Callable[[Job, int, Path], None], backend=None) -> None:
    """Start the pending jobs' train.py processes and call ``finished(job, returncode, log)`` as each ends:
    the one place that launches runs (``backend``: ``utils.compare.backend.Backend`` picks the packer;
    None = the local one, ``n_jobs`` at once per device, ``Packer``)."""
    for j in pending:
        wait_for_writer(j.run_dir)

    def command(job: Job, w: int) -> list[str]:
        note_start(job.run_dir)
        return job_command(job, train_args, w)

    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    (backend.packer if backend is not None else Packer)(n_jobs, gpus, workers, command, ROOT).run(pending, finished)


def run_pending(jobs: list[Job], train_args: list[str], workers: int, n_jobs: int | str,
                report: Callable[[Progress], None], label: str = "", backend=None) -> None:
    """Train the pending ones of ``jobs`` (``launch``); after each one ends log its line and the progress
    over all of ``jobs`` (done = finished or failed, ``label`` first: ``look 2 of 4``), and rewrite the
    tables with ``report(progress)``; ``backend`` (see ``launch``) also hears of each finished run."""
    pending = [j for j in jobs if j.status == "pending"]
    total, t0, finished_now = len(jobs), time.time(), 0

    def finished(job: Job, returncode: int, log: Path) -> None:
        nonlocal finished_now
        note_end(job.run_dir)
        job.read()
        finished_now += 1
        if job.record is not None:  # summary.json is written last: the run finished, whatever the exit code
            r = job.record
            LOGGER.info("[%s] done in %s s: mAP50 %.3f  mAP50-95 %.3f%s", job.name, f"{r.train_s:.0f}", r.map50, r.map,
                        f"  (recall 0: {', '.join(r.collapsed)})" if r.collapsed else "")
            if returncode != 0:
                LOGGER.warning("[%s] train.py exited with code %d after its summary.json; counted as finished (see %s)",
                               job.name, returncode, log)
        else:
            job.status = "failed"
            job.error = f"train.py exited with code {returncode}; see {log}"
            LOGGER.warning("[%s] failed: %s", job.name, job.error)
        done = sum(j.status != "pending" for j in jobs)
        elapsed = time.time() - t0
        progress = Progress(done, total, elapsed, eta_seconds(elapsed, finished_now, total - done), label)
        LOGGER.info(progress.line())
        report(progress)
        if backend is not None:
            backend.run_finished(job.run_dir)

    launch(pending, train_args, workers, n_jobs, finished, backend)


@contextlib.contextmanager
def comparison_lock(exp: Path) -> Iterator[None]:
    """One compare process per comparison folder: a second one is refused in one line before it reads,
    writes or launches anything (``<exp>/.lock`` holds the owner's pid; a killed owner's is taken over)."""
    lock = RunLock(exp).acquire()
    try:
        yield
    finally:
        lock.release()


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
        write_state(exp, state)


def compare(exp: Path, losses: list[str], seeds: list[int], train_args: list[str], workers: int, command: str,
            jobs: int | str = "auto", train: bool = True, alpha: float = ALPHA, backend=None) -> list[Job]:
    """Train (or resume, or read back) every (loss, seed) and write the tables and plots into ``exp``.

    ``train=False`` only reads back the finished runs and writes the tables (the rest stay pending).
    A command that ends with every planned run finished is a look (recorded in compare.json); the
    verdicts are corrected over all looks of the folder."""
    losses = unique_strategies(losses)  # gfl+atss is gfl: one row, one run folder
    with comparison_lock(exp):
        todo = make_jobs(exp, losses, seeds)
        read_jobs(todo, exp)

        def report(plots: bool = True, progress: Progress | None = None) -> None:
            looks, _ = recorded_looks(exp, todo)
            write_report(exp, [j.record for j in todo if j.record is not None], losses, status_of(todo), command,
                         plots, looks, alpha, progress=progress)

        if train:
            # tables after every run (cheap, and current while the rest train), plots once at the end
            run_pending(todo, train_args, workers, jobs, lambda p: report(plots=False, progress=p), backend=backend)
        report()
        if all(j.status == "done" for j in todo):
            record_look(exp, todo)
    LOGGER.info("\n%s", (exp / "results.md").read_text())
    LOGGER.info("Results saved to %s", exp)
    return todo


def report_dirs(exp: Path, dirs: list[Path], losses: list[str], command: str, alpha: float = ALPHA) -> list[RunRecord]:
    """Tables and plots in ``exp`` from the finished runs under ``dirs`` (see ``find_runs`` for the
    errors), as one look. Strategies in ``losses`` order first (the first one found is the baseline),
    others after."""
    losses = unique_strategies(losses)
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


__all__ = ["compare", "plan", "report_dirs", "hyp_for", "job_command", "run_pending", "launch", "read_state",
           "unique_strategies", "dataset_train_defaults", "comparison_lock", "HYP_DIR"]
