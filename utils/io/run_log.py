"""Per-epoch records of a training run: the trainer's list of loggers (``ResultsLogger``: results.csv in
YOLOv5's layout, TensorBoard scalars when the optional ``tensorboard`` package is installed, MLflow with
``--track mlflow`` from ``utils.io.trackers``), and ``results.png``.

On resume the CSV keeps only the rows of epochs before the resumed one, so a run killed and
resumed ends with exactly one row per epoch; a new run (``--exist-ok`` into a used folder) starts it
afresh. Every write replaces the whole file atomically (``write_atomic``), so the header is always
there and a full disk keeps every earlier row.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from utils.io.paths import write_atomic

LOGGER = logging.getLogger(__name__)
METRIC_KEYS = ("metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")


def result_keys(loss_names: tuple[str, ...]) -> list[str]:
    """Column names after 'epoch': train losses, metrics, val losses, learning rates (YOLOv5 order)."""
    return ([f"train/{n}_loss" for n in loss_names] + list(METRIC_KEYS) +
            [f"val/{n}_loss" for n in loss_names] + ["x/lr0", "x/lr1", "x/lr2"])


def epoch_metrics(file: Path, epoch: int) -> list[float] | None:
    """``[P, R, mAP50, mAP50-95]`` of ``epoch``'s row in a results.csv, None when there is no such row."""
    if not Path(file).exists():
        return None
    with open(file, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r]
    if not rows:
        return None
    cols = [rows[0].index(k) for k in METRIC_KEYS if k in rows[0]]
    for r in rows[1:]:
        if int(float(r[0])) == epoch and len(cols) == len(METRIC_KEYS):
            return [float(r[c]) for c in cols]
    return None


class RunLogger:
    """One destination of a run's records. The trainer calls ``start`` once the run folder is set up,
    ``epoch`` after each epoch's validation (results.csv's columns -> value), ``end`` after the final
    validation of best.pt (summary.json's content) and ``close`` last, also when the run stops early.
    A new tracker is one subclass added to the run's ``ResultsLogger``."""

    def start(self, save_dir: Path, opt: dict[str, Any], hyp: dict[str, Any]) -> None:
        pass

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        pass

    def end(self, save_dir: Path, summary: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class CsvLogger(RunLogger):
    """results.csv in YOLOv5's layout; a failed write raises (RunDirError: the run must stop)."""

    def __init__(self, save_dir: Path, keys: list[str], resume_epoch: int = 0):
        self.file, self.keys = Path(save_dir) / "results.csv", keys
        self.header = ",".join(["%20s" % "epoch"] + ["%20s" % k for k in self.keys]) + "\n"
        self.rows = self._rows_before(resume_epoch)
        write_atomic(self.file, self.header + "".join(self.rows))

    def _rows_before(self, first_epoch: int) -> list[str]:
        """The lines of epochs < first_epoch in an existing results.csv of the same columns (a resumed
        run; rows of a run killed after writing them are dropped)."""
        if not first_epoch or not self.file.exists():
            return []
        lines = self.file.read_text().splitlines(keepends=True)
        if not lines or [c.strip() for c in lines[0].split(",")] != ["epoch", *self.keys]:
            LOGGER.warning("WARNING: %s has other columns than this run logs; starting it afresh", self.file)
            return []
        return [ln for ln in lines[1:] if ln.strip() and int(float(ln.split(",")[0])) < first_epoch]

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        row = ",".join(["%20i" % epoch] + ["%20.5g" % values[k] for k in self.keys]) + "\n"
        write_atomic(self.file, self.header + "".join(self.rows) + row)
        self.rows.append(row)


class TensorBoardLogger(RunLogger):
    """TensorBoard scalars in the run folder (only when the optional ``tensorboard`` package is there)."""

    def __init__(self, save_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # ImportError without tensorboard

        self.writer = SummaryWriter(str(save_dir))
        LOGGER.info("TensorBoard: start with 'tensorboard --logdir %s'", Path(save_dir).parent)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, epoch)

    def close(self) -> None:
        self.writer.close()


class ResultsLogger:
    """The run's list of loggers: results.csv first (its failure stops the run), TensorBoard when
    installed, then any added (``add``: MLflow with ``--track mlflow``)."""

    def __init__(self, save_dir: Path, loss_names: tuple[str, ...], resume_epoch: int = 0, tensorboard: bool = True):
        self.keys = result_keys(loss_names)
        self.csv = CsvLogger(save_dir, self.keys, resume_epoch)
        self.file = self.csv.file
        self.loggers: list[RunLogger] = [self.csv]
        if tensorboard:
            try:
                self.loggers.append(TensorBoardLogger(save_dir))
            except ImportError:
                pass

    def add(self, logger: RunLogger) -> None:
        self.loggers.append(logger)

    def start(self, save_dir: Path, opt: dict[str, Any], hyp: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.start(save_dir, opt, hyp)

    def log(self, epoch: int, values: list[float]) -> None:
        if len(values) != len(self.keys):
            raise ValueError(f"results row has {len(values)} values for {len(self.keys)} columns")
        row = dict(zip(self.keys, map(float, values)))
        for lg in self.loggers:
            lg.epoch(epoch, row)

    def end(self, save_dir: Path, summary: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.end(save_dir, summary)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def read_results(file: str | Path) -> tuple[list[str], list[list[float]]]:
    """(column names, rows of floats) of a results.csv."""
    with open(file, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r]
    return rows[0], [[float(c) for c in r] for r in rows[1:]]


def smooth(y: Sequence[float], sigma: float = 3.0) -> np.ndarray:
    """YOLOv5's dotted results.png curve: ``scipy.ndimage.gaussian_filter1d(y, sigma=3)``."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(y, dtype=float), sigma=sigma)


def plot_results(file: str | Path) -> Path | None:
    """results.png next to results.csv: one panel per column against epoch, with YOLOv5's smoothed curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, rows = read_results(file)
    if not rows:
        return None
    cols = list(zip(*rows))
    n = len(keys) - 1
    ncol = (n + 1) // 2
    fig, axes = plt.subplots(2, ncol, figsize=(3 * ncol, 6), tight_layout=True)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.axis("off")
            continue
        ax.plot(cols[0], cols[i + 1], marker=".", linewidth=2, markersize=8, label="results")
        ax.plot(cols[0], smooth(cols[i + 1]), ":", linewidth=2, label="smooth")
        ax.set_title(keys[i + 1], fontsize=10)
    axes.ravel()[1].legend()
    out = Path(file).with_name("results.png")
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out
