"""compare.py's runs as Ray tasks (``--backend ray``): Ray places them, the driver keeps the comparison.

The driver (``utils.compare.driver``) still builds the job list, decides the rounds of ``--seeds auto``
and writes compare.json and the tables; ``RayPacker`` stands in for the local ``Packer`` with the same
``run(pending, finished)`` contract. Each (strategy, seed) is one Ray core task that launches the very
``train.py`` command the local backend would, with the local backend's thread count (Ray sets
``OMP_NUM_THREADS=1`` in its workers; the task undoes that), so a run gives the same row on either backend.

Resources per task (``task_resources``): ``num_gpus = 1/k`` with k runs per GPU (``--jobs k``; ``auto`` is
1 here: the local memory probe watches the driver's own GPUs), ``num_cpus = workers + 1``; on a CPU-only
cluster a run with ``--jobs 1`` takes a whole node, as it takes the whole machine locally.

Faults: a ``train.py`` gets SIGKILL when the worker that launched it dies (``PR_SET_PDEATHSIG``), so it
never trains beside its own retry. A task whose worker or node died is submitted again (``retries``
times) with the command built anew, which resumes the run from its ``last.pt``; a ``train.py`` that
fails by its own exit code is reported failed, not retried. The run folders must be on a filesystem
every node sees: a worker that cannot see the comparison folder fails the run with one line. Ctrl-C or
SIGTERM to the driver cancels the tasks (each stops its ``train.py`` with SIGTERM, then SIGKILL after
``STOP_WAIT_S``) before the interrupt goes on.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from utils.compare.pack import (POLL_S, STOP_WAIT_S, PackJob, cpu_cores, die_with_parent, split_workers,
                                stop_process, thread_env)

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
INSTALL = "pip install -r requirements-ray.txt"


def import_ray() -> Any:
    """The ``ray`` module, or ImportError with the one line that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"--backend ray needs Ray: {INSTALL}") from None
    return ray


def start_ray(address: str | None) -> bool:
    """Join the cluster at ``address`` (``auto``, ``host:6379``, ``ray://host:10001``; None: RAY_ADDRESS,
    else an embedded instance on this machine). Returns whether this call started Ray (and so must stop it)."""
    ray = import_ray()
    if ray.is_initialized():  # a caller's instance (tests, notebooks): used as it is, left running
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    address = address or os.environ.get("RAY_ADDRESS") or None
    t0 = time.time()
    # the workers import this module from the repository, which every node sees (the shared filesystem)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    LOGGER.info("Ray: %s in %.1f s (%s)", f"joined {address}" if address else "embedded instance started",
                time.time() - t0, resources_line(ray.cluster_resources()))
    return True


def cluster_gpus() -> int:
    """The GPUs of the Ray cluster joined (all nodes)."""
    return int(import_ray().cluster_resources().get("GPU", 0))


def resources_line(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def task_resources(per_gpu: int, workers: int, node_cpus: int, use_gpus: bool) -> tuple[float, float]:
    """(num_cpus, num_gpus) of one run: ``per_gpu`` runs share a GPU (1/k each) and each takes its loader
    workers + 1 CPUs; without GPUs ``per_gpu`` runs share a node's CPUs. Never more CPUs than a node has
    (``node_cpus``: the largest node), or the task could not be placed anywhere."""
    if use_gpus:
        return float(min(workers + 1, node_cpus)), 1.0 / per_gpu
    return float(min(max(workers + 1, node_cpus // per_gpu), node_cpus)), 0.0


def child_setup(niceness: int) -> Callable[[], None]:
    """``preexec_fn`` of train.py: the kernel sends it SIGKILL when the worker that started it dies, and it
    runs at the driver's niceness, not at the one Ray gives its workers (15: a packed run would get a
    smaller share of the cores than the same run launched by the local backend)."""
    parent = os.getpid()

    def setup() -> None:
        die_with_parent(parent, signal.SIGKILL)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
        except OSError:  # lowering it needs privileges: the run stays at the worker's
            pass
    return setup


def run_train(cmd: list[str], cwd: str, log_path: str, runs_at_once: int, driver_threads: str | None,
              niceness: int = 0) -> dict:
    """The body of a Ray task: run ``cmd`` (a train.py line) to its end; {"returncode": int} or, when this
    node does not see the comparison folder, {"unseen": host}. Cancelled (KeyboardInterrupt from
    ``ray.cancel``): the train.py gets SIGTERM (it keeps last.pt), then SIGKILL after STOP_WAIT_S."""
    if not Path(log_path).parent.is_dir() or not Path(cwd).is_dir():
        return {"unseen": socket.gethostname()}
    env = thread_env(os.environ, runs_at_once, driver_threads, cpu_cores())  # the local backend's threads
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=child_setup(niceness))
        try:
            while proc.poll() is None:  # not proc.wait(): ray.cancel's interrupt lands only between bytecodes
                time.sleep(POLL_S)
            return {"returncode": proc.returncode, "host": socket.gethostname()}
        except BaseException:
            proc.terminate()
            stop_process(proc, STOP_WAIT_S)
            raise


@dataclass
class Flight:
    job: PackJob
    attempt: int  # 0 = first launch


class RayPacker:
    """``Packer``'s contract on Ray: ``run(pending, finished)`` calls ``finished(job, returncode, log)``
    once per job; at most as many tasks in flight as the cluster can run at once, so that a run's start
    time is when it starts."""

    def __init__(self, jobs: str | int, gpus: list[int], max_workers: int,
                 command: Callable[[PackJob, int], list[str]], cwd: Path, retries: int = 3):
        self.ray = import_ray()
        self.per_gpu = 1 if jobs == "auto" else int(jobs)
        nodes = [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]
        node_cpus = int(max((n.get("CPU", 1) for n in nodes), default=1))
        self.use_gpus = bool(gpus)
        self.num_cpus, self.num_gpus = task_resources(self.per_gpu, max_workers, node_cpus, self.use_gpus)
        self.slots = max(1, sum(slots_on(n, self.num_cpus, self.num_gpus) for n in nodes))
        self.workers = split_workers(max_workers, cpu_cores(), self.per_gpu)
        self.command, self.cwd, self.retries = command, cwd, retries
        self.remote = self.ray.remote(run_train).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                                          max_retries=0, retry_exceptions=False)
        self.flights: dict[Any, Flight] = {}
        LOGGER.info("--backend ray: %g CPU%s per run, up to %d at once", self.num_cpus,
                    f" and {self.num_gpus:g} GPU" if self.num_gpus else "", self.slots)

    def submit(self, job: PackJob, attempt: int) -> None:
        cmd = self.command(job, self.workers) + (["--device", "0"] if self.use_gpus else [])
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        log = job.run_dir.parent / f"{job.name}.log"
        LOGGER.info("[%s] %s: %s", job.name, "submit" if not attempt else f"retry {attempt}/{self.retries}",
                    " ".join(cmd))
        ref = self.remote.remote(cmd, str(self.cwd), str(log), self.per_gpu, os.environ.get("OMP_NUM_THREADS"),
                                 os.getpriority(os.PRIO_PROCESS, 0))
        self.flights[ref] = Flight(job, attempt)

    def run(self, pending: list[PackJob], finished: Callable[[PackJob, int, Path], None]) -> None:
        """Submit and collect the runs; an interrupt (Ctrl-C, SIGTERM) or error cancels every task first,
        so no train.py outlives this call."""
        queue = list(pending)
        try:
            while queue or self.flights:
                while queue and len(self.flights) < self.slots:
                    self.submit(queue.pop(0), 0)
                ready, _ = self.ray.wait(list(self.flights), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    self.collect(ref, finished)
        except BaseException:
            self.cancel_all()
            raise

    def collect(self, ref: Any, finished: Callable[[PackJob, int, Path], None]) -> None:
        """One finished task: its exit code to ``finished``, or a new try when its worker or node died."""
        flight = self.flights.pop(ref)
        job, log = flight.job, flight.job.run_dir.parent / f"{flight.job.name}.log"
        try:
            out = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:  # the task's own code failed: a bug, not a lost node
            LOGGER.error("[%s] the Ray task failed: %s", job.name, str(e).splitlines()[-1])
            finished(job, 1, log)
            return
        except self.ray.exceptions.RayError as e:  # worker or node lost
            if flight.attempt < self.retries:
                LOGGER.warning("[%s] its Ray worker died (%s); retrying from its last.pt", job.name, type(e).__name__)
                self.submit(job, flight.attempt + 1)
                return
            LOGGER.error("[%s] its Ray worker died %d times; giving up", job.name, flight.attempt + 1)
            finished(job, 1, log)
            return
        if "unseen" in out:
            LOGGER.error("[%s] the Ray node %s does not see %s: the comparison folder must be on a filesystem "
                         "every node sees (docs/cluster.md)", job.name, out["unseen"], job.run_dir.parent)
            finished(job, 1, log)
            return
        finished(job, out["returncode"], log)

    def cancel_all(self) -> None:
        """Cancel the tasks in flight (each stops its train.py), wait for them, then force the rest."""
        refs = list(self.flights)
        for ref in refs:
            self.ray.cancel(ref)
        done, left = self.ray.wait(refs, num_returns=len(refs), timeout=STOP_WAIT_S + 5) if refs else ([], [])
        for ref in left:
            self.ray.cancel(ref, force=True)
        if refs:
            self.ray.wait(left, num_returns=len(left), timeout=10)
        for f in self.flights.values():
            LOGGER.info("[%s] stopped; the same command resumes it", f.job.name)
        self.flights = {}


def slots_on(node: dict[str, float], num_cpus: float, num_gpus: float) -> int:
    """How many runs of the given size fit on a node at once."""
    n = int(node.get("CPU", 0) // num_cpus) if num_cpus else sys.maxsize
    if num_gpus:
        n = min(n, int(round(node.get("GPU", 0) / num_gpus, 6)))
    return n


__all__ = ["RayPacker", "start_ray", "import_ray", "task_resources", "cluster_gpus", "run_train", "INSTALL"]
