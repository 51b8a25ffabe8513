"""The run folder: chosen (runs/train/exp*) and locked by rank 0, removed again after a failed start,
and filled with the run's files once every check has passed."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from utils.engine.config import DEFAULT_PROJECT
from utils.engine.distributed import DistInfo, broadcast
from utils.io.paths import RunDirError, RunLock, make_run_dir, write_atomic

LOGGER = logging.getLogger(__name__)


def make_save_dir(options: dict[str, Any], info: DistInfo) -> tuple[Path, bool, RunLock | None]:
    """runs/train/exp* chosen by rank 0 and shared with the other ranks (a resumed run's own folder as it
    is) -> (folder, created by this run, rank 0's lock on it). A folder another live run holds is
    refused (RunDirError)."""
    created, lock = False, None
    if options["resume"] and options["save_dir"]:
        save_dir = Path(options["save_dir"])
    else:
        if info.main:
            folder = Path(options["project"] or DEFAULT_PROJECT) / (options["name"] or "exp")
            save_dir, created = make_run_dir(folder, exist_ok=options["exist_ok"])
        save_dir = broadcast(save_dir if info.main else None, info)
    if info.main:
        lock = RunLock(save_dir).acquire()
        try:
            (save_dir / "weights").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            lock.release()
            raise RunDirError(f"cannot write to the run folder {save_dir} ({e.strerror or e})") from None
    return save_dir, created, lock


def abandon_save_dir(save_dir: Path, created: bool, lock: RunLock | None) -> None:
    """After a failed start: release the lock and remove the folder this run created, unless it
    already holds a checkpoint (a failed start must not leave an empty run folder behind)."""
    if lock is not None:
        lock.release()
    if created and lock is not None and not any((save_dir / "weights").glob("*.pt")):
        shutil.rmtree(save_dir, ignore_errors=True)
        LOGGER.info("removed the run folder %s of the failed start", save_dir)


def write_run_files(save_dir: Path, hyp: dict[str, Any], options: dict[str, Any]) -> None:
    """hyp.yaml and opt.yaml of the run (written only once every check has passed, so that a failed
    start, ``--exist-ok`` into a finished run included, changes nothing in the folder)."""
    write_atomic(save_dir / "hyp.yaml", yaml.safe_dump(hyp, sort_keys=False))
    write_atomic(save_dir / "opt.yaml", yaml.safe_dump(options, sort_keys=False))


def plot_training_labels(save_dir: Path, labels: list[np.ndarray], names: list[str]) -> None:
    """labels.jpg: the class counts and box shapes of the training split (a new run only)."""
    from utils.io.plots import plot_labels

    labels = [lb for lb in labels if len(lb)] or [np.zeros((0, 5))]
    plot_labels(np.concatenate(labels), names, save_dir)
