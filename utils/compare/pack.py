"""Running several train.py processes at once: how many, with how many loader workers, and progress.

A small model at a small image size leaves most of a GPU idle, so a comparison of many (strategy,
seed) runs finishes sooner with several side by side on each device (seven 60-epoch BCCD yolov5n runs
together took about 5 minutes on one H100). ``--jobs N`` runs N per device; ``--jobs auto`` on
CUDA starts one run per GPU, watches the device's free memory until that run has finished its first
epoch (training and validation, so both peaks are in), then packs as many as fit into the free
memory it saw before, times a safety factor, and as many as the CPU cores can feed. On CPU ``auto``
is 1: the training process already uses every core.

The decisions are pure functions of given numbers (``choose_jobs``, ``split_workers``,
``child_threads``, ``eta_seconds``) so they are tested without a GPU; ``Packer`` is the loop that
starts, watches and reaps the processes.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Mapping, Protocol, Sequence

LOGGER = logging.getLogger(__name__)
# measured peaks miss short spikes between samples, and the strategies of a comparison differ in
# memory (the probe is the first strategy's run): leave this factor of room per run
MEMORY_SAFETY = 1.5
POLL_S = 0.5
STOP_WAIT_S = 60.0  # for the runs to save and exit after a SIGTERM, before they are killed


def parse_jobs(text: str) -> int | str:
    """``--jobs``: a positive integer or ``auto`` (argparse type; bad values exit 2 with one line)."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1 or str(n) != text.strip():
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got '{text}'")
    return n


def cpu_cores() -> int:
    """The cores this process may run on (a container's or Slurm's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def choose_jobs(free_bytes: Sequence[int], peak_bytes: int, cores: int, safety: float = MEMORY_SAFETY) -> list[int]:
    """Runs per GPU for ``--jobs auto``.

    free_bytes: free memory of each GPU before the probe run started; peak_bytes: the most device
    memory the probe run took (CUDA context included). Each GPU takes ``free // (peak * safety)``
    runs (at least 1); the total is then cut to ``cores // 2`` (a training process and at least one
    loader worker per run), taking from the GPUs with the most runs first.
    """
    if peak_bytes <= 0:
        return [1] * len(free_bytes)
    per_gpu = [max(1, int(f // (peak_bytes * safety))) for f in free_bytes]
    cap = max(len(per_gpu), cores // 2)
    while sum(per_gpu) > cap:
        i = max(range(len(per_gpu)), key=lambda k: per_gpu[k])
        per_gpu[i] -= 1
    return per_gpu


def split_workers(max_workers: int, cores: int, total_jobs: int) -> int:
    """Loader workers per run when ``total_jobs`` share ``cores``: one core stays with each training
    process, the rest is shared; never more than ``max_workers`` (``--workers``), and one run alone
    keeps ``--workers`` as given (train.py caps it by the cores itself)."""
    if total_jobs <= 1 or max_workers == 0:
        return max_workers
    return min(max_workers, max(1, cores // total_jobs - 1))


def child_threads(cores: int, total_jobs: int) -> int:
    """Intra-op threads per training process so that packed runs do not oversubscribe the cores."""
    return max(1, cores // max(1, total_jobs))


def thread_env(base: Mapping[str, str], runs_at_once: int, user_threads: str | None, cores: int) -> dict[str, str]:
    """The environment of a train.py: ``base`` with the thread count every backend gives. The user's
    ``OMP_NUM_THREADS`` (``user_threads``: the driver's) goes to every run; else ``cores / runs_at_once``
    when runs are packed; else none, and torch takes every core (a Ray worker's own ``OMP_NUM_THREADS=1``
    is dropped, so a run has the same threads on either backend)."""
    env = {k: v for k, v in base.items() if k != "OMP_NUM_THREADS"}
    if user_threads is not None:
        env["OMP_NUM_THREADS"] = user_threads
    elif runs_at_once > 1:
        env["OMP_NUM_THREADS"] = str(child_threads(cores, runs_at_once))
    return env


def stop_process(proc: subprocess.Popen, wait_s: float) -> bool:
    """Wait up to ``wait_s`` for ``proc`` (already sent SIGTERM) to end, then kill it; True if it had to
    be killed."""
    try:
        proc.wait(max(0.0, wait_s))
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


def eta_seconds(elapsed: float, finished_now: int, remaining: int) -> float | None:
    """Time left at the pace of the runs finished in this invocation (packed runs included); None
    before the first one finishes."""
    if finished_now == 0:
        return None
    return elapsed / finished_now * remaining


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def progress_line(done: int, total: int, elapsed: float, eta: float | None, width: int = 20) -> str:
    """The overall bar: ``[#######.............] 7/20 runs, 0:05:10 elapsed, ETA 0:09:36``."""
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} runs, {duration(elapsed)} elapsed, ETA {duration(eta)}"


@dataclass(frozen=True)
class Progress:
    """Where a set of runs stands: ``done`` of ``total`` ended (finished or failed), ``elapsed`` seconds
    since this invocation started them, ``eta`` seconds left (None before one ended), and a ``label``
    (``look 2 of 4``) that names the set."""
    done: int
    total: int
    elapsed: float
    eta: float | None
    label: str = ""

    def line(self) -> str:
        return (f"{self.label}: " if self.label else "") + progress_line(self.done, self.total, self.elapsed, self.eta)

    def words(self) -> str:
        """The same for results.md: ``5 of 9 runs done, 0:03:10 elapsed, ETA 0:02:40``."""
        return f"{self.done} of {self.total} runs done, {duration(self.elapsed)} elapsed, ETA {duration(self.eta)}"


PR_SET_PDEATHSIG = 1  # linux/prctl.h
# resolved here, in the parent: the child between fork and exec should only call it, not load libraries
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """``preexec_fn`` of a training process: on Linux the kernel sends it ``sig`` when the process that
    started it dies, even by SIGKILL (which runs no clean-up of ours), so no train.py outlives its
    compare; SIGTERM by default, not SIGKILL, so that it still releases its run lock. ``parent``: the
    starting process's pid, taken before the fork. Elsewhere nothing."""
    if _PRCTL is None:
        return
    _PRCTL(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


class PackJob(Protocol):
    name: str
    run_dir: Path


@dataclass
class Running:
    job: PackJob
    proc: subprocess.Popen
    log: IO[str]
    gpu: int | None
    epochs_at_start: int  # a resumed run already has rows in its results.csv


def cuda_free_bytes(gpu: int) -> int:
    """Free memory of a GPU as the driver sees it (other processes' use included)."""
    import torch

    return int(torch.cuda.mem_get_info(gpu)[0])


def epochs_logged(run_dir: Path) -> int:
    f = run_dir / "results.csv"
    return max(0, len(f.read_text().splitlines()) - 1) if f.exists() else 0


class Packer:
    """Starts ``command(job, workers)`` processes, ``capacity[gpu]`` at a time per device, and calls
    ``finished(job, returncode, log_path)`` as each ends. ``gpus`` empty = CPU (one slot group)."""

    def __init__(self, jobs: str | int, gpus: list[int], max_workers: int,
                 command: Callable[[PackJob, int], list[str]], cwd: Path, cores: int | None = None):
        self.gpus: list[int | None] = list(gpus) or [None]
        self.cores = cores or cpu_cores()
        self.max_workers = max_workers
        self.command, self.cwd = command, cwd
        self.probing = jobs == "auto" and bool(gpus)
        n = 1 if jobs == "auto" else int(jobs)
        self.capacity = {g: n for g in self.gpus}
        self.free_before: dict[int, int] = {}
        self.peak_bytes = 0
        self.running: list[Running] = []

    @property
    def total(self) -> int:
        return sum(self.capacity.values())

    def env(self, gpu: int | None) -> dict[str, str]:
        env = thread_env(os.environ, self.total, os.environ.get("OMP_NUM_THREADS"), self.cores)
        if gpu is not None:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[gpu] if visible else str(gpu)
        return env

    def start(self, job: PackJob, gpu: int | None) -> None:
        if self.probing and gpu not in self.free_before:
            self.free_before[gpu] = cuda_free_bytes(gpu)
        workers = self.max_workers if self.probing else split_workers(self.max_workers, self.cores, self.total)
        cmd = self.command(job, workers) + (["--device", "0"] if gpu is not None else [])
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(job.run_dir.parent / f"{job.name}.log", "a")
        LOGGER.info("[%s] start%s: %s", job.name, "" if gpu is None else f" on GPU {gpu}", " ".join(cmd))
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env(gpu),
                                preexec_fn=functools.partial(die_with_parent, os.getpid()))
        self.running.append(Running(job, proc, log, gpu, epochs_logged(job.run_dir)))

    def watch_probe(self) -> None:
        """While probing: track the probe runs' memory; once one has a finished epoch, set the capacity."""
        for g, before in self.free_before.items():
            self.peak_bytes = max(self.peak_bytes, before - cuda_free_bytes(g))
        if any(epochs_logged(r.job.run_dir) > r.epochs_at_start for r in self.running):
            self.end_probe()

    def end_probe(self) -> None:
        gpus = [g for g in self.gpus if g is not None]
        per_gpu = choose_jobs([self.free_before.get(g, cuda_free_bytes(g)) for g in gpus], self.peak_bytes, self.cores)
        self.capacity = dict(zip(gpus, per_gpu))
        self.probing = False
        LOGGER.info("--jobs auto: a run takes %.0f MiB of GPU memory at its peak; running %s at once "
                    "(%d loader workers each)", self.peak_bytes / 2 ** 20,
                    ", ".join(f"{n} on GPU {g}" for g, n in self.capacity.items()),
                    split_workers(self.max_workers, self.cores, self.total))

    def stop_all(self) -> None:
        """SIGTERM to every run (train.py stops as on Ctrl-C: last.pt keeps the last finished epoch and the
        same command resumes it), then wait; a run still alive after STOP_WAIT_S is killed."""
        for r in self.running:
            if r.proc.poll() is None:
                r.proc.terminate()
        deadline = time.time() + STOP_WAIT_S
        for r in self.running:
            if stop_process(r.proc, deadline - time.time()):
                LOGGER.warning("[%s] did not stop within %.0f s; it was killed", r.job.name, STOP_WAIT_S)
            r.log.close()
            LOGGER.info("[%s] stopped; the same command resumes it", r.job.name)
        self.running = []

    def run(self, pending: list[PackJob], finished: Callable[[PackJob, int, Path], None]) -> None:
        """Start and reap the runs; an interrupt (Ctrl-C, SIGTERM) or error here stops the running ones
        first, so no train.py outlives this process."""
        try:
            self._run(list(pending), finished)
        except BaseException:
            self.stop_all()
            raise

    def _run(self, pending: list[PackJob], finished: Callable[[PackJob, int, Path], None]) -> None:
        while pending or self.running:
            for g in self.gpus:
                while pending and sum(r.gpu == g for r in self.running) < self.capacity[g]:
                    self.start(pending.pop(0), g)
            time.sleep(POLL_S)
            if self.probing:
                self.watch_probe()
            for r in [r for r in self.running if r.proc.poll() is not None]:
                r.log.close()
                self.running.remove(r)
                if self.probing and r.proc.returncode == 0:
                    self.end_probe()  # a run shorter than the first probe sample: use what was seen
                finished(r.job, r.proc.returncode, Path(r.log.name))


__all__ = ["Packer", "Progress", "die_with_parent", "parse_jobs", "choose_jobs",
           "split_workers", "child_threads", "thread_env", "stop_process", "eta_seconds",
           "progress_line", "cpu_cores"]
