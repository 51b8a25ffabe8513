"""Train several loss strategies on the same data, model, schedule and seeds, and tabulate them.

Each (strategy, seed) is one train.py process writing ``<exp>/runs/<loss>-s<seed>/``; a process that
dies is reported as failed and the others go on. Rerunning the same command resumes: finished runs
(a ``summary.json``) are read back, interrupted ones continue from their ``last.pt``. With several
GPUs, one process per GPU runs at a time; otherwise they run one after another.

Outputs in ``<exp>/``: ``results.md`` and ``results.csv`` (mAP50, mAP50-95 and per-class AP as mean ±
std over seeds, train images/s, loss ms/step, peak memory), ``map_vs_epoch.png`` (mAP50-95 of every
strategy per epoch, mean over seeds) and ``pr_curves.png`` (each strategy's PR curve of its first
seed, side by side).
"""
from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils.io.checkpoint import CheckpointError, read_checkpoint
from utils.engine.hyp import HYP_DIR, find_hyp, load_hyp
from utils.loss import loss_class
from utils.io.run_log import read_results

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def hyp_for(loss: str) -> Path:
    """The hyp file of a strategy: hyp/hyp.<loss>.yaml, or hyp.scratch.yaml for ``yolov5``."""
    loss_class(loss)  # unknown name -> ValueError listing the choices
    path = find_hyp("hyp.scratch.yaml" if loss == "yolov5" else f"hyp.{loss}.yaml")
    declared = load_hyp(path).get("loss", "yolov5")
    if declared != loss:
        raise ValueError(f"{path} trains loss '{declared}', expected '{loss}'")
    return path


@dataclass
class Job:
    loss: str
    seed: int
    run_dir: Path
    status: str = "pending"  # pending | done | failed
    summary: dict = field(default_factory=dict)
    error: str = ""

    @property
    def name(self) -> str:
        return f"{self.loss}-s{self.seed}"


def job_command(job: Job, train_args: list[str], device: str | None) -> list[str]:
    """The train.py command of a job: a resume when an unfinished last.pt is there."""
    last = job.run_dir / "weights" / "last.pt"
    if last.exists():
        try:
            resumable = read_checkpoint(last).get("optimizer") is not None
        except CheckpointError:
            resumable = False
        if resumable:
            cmd = [sys.executable, str(ROOT / "train.py"), "--resume", str(last), "--quiet"]
            return cmd + (["--device", device] if device is not None else [])
    cmd = [sys.executable, str(ROOT / "train.py"), *train_args, "--hyp", str(hyp_for(job.loss)),
           "--seed", str(job.seed), "--project", str(job.run_dir.parent), "--name", job.run_dir.name,
           "--exist-ok", "--quiet"]
    return cmd + (["--device", device] if device is not None else [])


def run_jobs(jobs: list[Job], train_args: list[str], on_finish=None) -> None:
    """Run the pending jobs, one per GPU at a time when there are GPUs, else sequentially.

    ``on_finish()`` is called after each job ends (done or failed), so tables stay current while the
    rest still train."""
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    slots = [str(i) for i in range(n_gpu)] or [None]
    pending = [j for j in jobs if j.status == "pending"]
    running: dict = {}
    while pending or running:
        for slot in slots:
            if slot not in running and pending:
                job = pending.pop(0)
                job.run_dir.parent.mkdir(parents=True, exist_ok=True)
                log = open(job.run_dir.parent / f"{job.name}.log", "a")
                cmd = job_command(job, train_args, slot)
                LOGGER.info("[%s] %s", job.name, " ".join(cmd))
                running[slot] = (job, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log)
        time.sleep(0.5)
        for slot, (job, proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[slot]
            read_job(job)
            if job.status != "done":
                job.status = "failed"
                job.error = f"train.py exited with code {proc.returncode}; see {log.name}"
                LOGGER.warning("[%s] failed: %s", job.name, job.error)
            else:
                LOGGER.info("[%s] done: mAP50 %.3f  mAP50-95 %.3f", job.name, job.summary["map50"], job.summary["map"])
            if on_finish is not None:
                on_finish()


def read_job(job: Job) -> None:
    f = job.run_dir / "summary.json"
    if f.exists():
        job.summary = json.loads(f.read_text())
        job.status = "done"


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def table_rows(jobs: list[Job], losses: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per strategy (means ± std over its finished seeds)."""
    classes = sorted({c for j in jobs if j.status == "done" for c in j.summary["per_class"]})
    header = (["loss", "runs", "mAP50", "mAP50-95"] + [f"AP50-95 {c}" for c in classes] +
              ["train img/s", "loss ms/step", "peak MiB", "failed"])
    rows = []
    for loss in losses:
        done = [j.summary for j in jobs if j.loss == loss and j.status == "done"]
        failed = [j.name for j in jobs if j.loss == loss and j.status == "failed"]
        row = [loss, f"{len(done)}/{len(done) + len(failed) + sum(1 for j in jobs if j.loss == loss and j.status == 'pending')}",
               mean_std([s["map50"] for s in done]), mean_std([s["map"] for s in done])]
        row += [mean_std([s["per_class"][c]["ap"] for s in done if c in s["per_class"]]) for c in classes]
        row += [f"{np.mean([s[k] for s in done]):.{digits}f}" if done else "-"
                for k, digits in (("train_images_per_s", 1), ("loss_step_ms", 1), ("peak_memory_mib", 0))]
        row.append(", ".join(failed) or "")
        rows.append(row)
    return header, rows


def write_tables(exp: Path, header: list[str], rows: list[list[str]], command: str) -> None:
    with open(exp / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    lines = [f"Command: `{command}`", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    (exp / "results.md").write_text("\n".join(lines) + "\n")


def plot_curves(exp: Path, jobs: list[Job], losses: list[str]) -> None:
    """map_vs_epoch.png and pr_curves.png for the finished runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), tight_layout=True)
    for loss in losses:
        curves = []
        for j in jobs:
            if j.loss == loss and (j.run_dir / "results.csv").exists():
                keys, rows = read_results(j.run_dir / "results.csv")
                curves.append([r[keys.index("metrics/mAP_0.5:0.95")] for r in rows])
        if curves:
            n = min(len(c) for c in curves)
            ax.plot(range(n), np.mean([c[:n] for c in curves], 0), label=loss, linewidth=2)
    ax.set(xlabel="epoch", ylabel="mAP50-95 (mean over seeds)", title="validation mAP50-95 per epoch")
    if ax.lines:
        ax.legend()
    fig.savefig(exp / "map_vs_epoch.png", dpi=150)
    plt.close(fig)

    firsts = [next((j for j in jobs if j.loss == loss and (j.run_dir / "PR_curve.png").exists()), None) for loss in losses]
    firsts = [j for j in firsts if j is not None]
    if firsts:
        fig, axes = plt.subplots(1, len(firsts), figsize=(5 * len(firsts), 4), squeeze=False)
        for ax, j in zip(axes[0], firsts):
            ax.imshow(plt.imread(j.run_dir / "PR_curve.png"))
            ax.set_title(j.name)
            ax.axis("off")
        fig.savefig(exp / "pr_curves.png", dpi=150, bbox_inches="tight")
        plt.close(fig)


def compare(exp: Path, losses: list[str], seeds: list[int], train_args: list[str], command: str,
            train: bool = True) -> list[Job]:
    """Train (or resume, or read back) every (loss, seed) and write the tables and plots into ``exp``.

    ``train=False`` only reads back the finished runs and writes the tables (the rest stay pending)."""
    for loss in losses:
        hyp_for(loss)  # fail before any training when a strategy or its hyp file is missing
    # seed-major: every strategy's first seed finishes before any second seed starts, so a comparison
    # cut short still compares all strategies
    jobs = [Job(loss, seed, exp / "runs" / f"{loss}-s{seed}") for seed in seeds for loss in losses]
    for j in jobs:
        read_job(j)

    def report() -> None:
        header, rows = table_rows(jobs, losses)
        write_tables(exp, header, rows, command)
        plot_curves(exp, jobs, losses)

    if train:
        run_jobs(jobs, train_args, on_finish=report)
    report()
    LOGGER.info("\n%s", (exp / "results.md").read_text())
    LOGGER.info("Results saved to %s", exp)
    return jobs


__all__ = ["compare", "hyp_for", "HYP_DIR"]
