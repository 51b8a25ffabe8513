"""Where compare.py's runs train and who hears of each finished one: ``--backend local|ray`` and ``--track``.

The driver asks a ``Backend`` for the packer of a round (``packer``: the local ``Packer`` or Ray's
``RayPacker``, one contract) and tells it of every finished run (``run_finished``: MLflow logs the run
from its folder). compare.py makes one per command and closes it at the end (``close``: the tracker's
parent run gets the tables; an embedded Ray instance is stopped).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from utils.compare.pack import Packer, PackJob


class Backend:
    """``kind``: "local" or "ray" (``address``: a cluster to join, None = RAY_ADDRESS or embedded;
    ``retries``: new tries of a run whose Ray worker or node died); ``track``: None or "mlflow" with
    ``exp`` the comparison folder."""

    def __init__(self, kind: str = "local", address: str | None = None, retries: int = 3,
                 track: str | None = None, exp: Path | None = None):
        self.kind, self.address, self.retries = kind, address, retries
        self.started_ray = False
        if kind == "ray":
            from utils.compare.ray_backend import start_ray

            self.started_ray = start_ray(address)
        self.tracker = None
        if track == "mlflow" and exp is not None:
            from utils.io.trackers import CompareTracker

            self.tracker = CompareTracker(exp)

    def packer(self, n_jobs: int | str, gpus: list[int], workers: int,
               command: Callable[[PackJob, int], list[str]], cwd: Path) -> Any:
        """The object whose ``run(pending, finished)`` trains a round; ``gpus``: the driver's GPUs (a
        joined cluster's own GPUs count instead)."""
        if self.kind != "ray":
            return Packer(n_jobs, gpus, workers, command, cwd)
        from utils.compare.ray_backend import RayPacker, cluster_gpus

        if self.address or os.environ.get("RAY_ADDRESS"):  # a cluster: its GPUs, not this machine's
            gpus = list(range(cluster_gpus()))
        return RayPacker(n_jobs, gpus, workers, command, cwd, self.retries)

    def run_finished(self, run_dir: Path) -> None:
        if self.tracker is not None:
            self.tracker.run_finished(run_dir)

    def close(self, run_dirs: list[Path]) -> None:
        """The tracker's last records (runs not logged yet, the tables), then Ray stopped if started here."""
        try:
            if self.tracker is not None:
                self.tracker.comparison_done(run_dirs)
        finally:
            if self.started_ray:
                import ray

                ray.shutdown()
                self.started_ray = False


__all__ = ["Backend"]
