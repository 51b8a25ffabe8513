"""Experiment tracking in MLflow (``--track mlflow`` on train.py and compare.py).

Offline by default: one SQLite store for every run, ``runs/mlflow.db`` in the repository (artifacts in
``runs/mlartifacts``), so ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`` shows them all;
``MLFLOW_TRACKING_URI`` names another store or a team server. Per run: params ``loss``, ``assigner``,
``seed`` and the settings (data, cfg, imgsz, epochs, batch_size, precision, optimizer, ``hyp/<key>`` for
the hyp as trained), the per-epoch columns of results.csv as metrics by epoch, the final validation of
best.pt as ``best/mAP50`` / ``best/mAP50-95`` (summary.json, what compare's runs.csv holds) and per class
``best/AP50-95/<class>``, the tag ``run_dir``, and results.png / confusion_matrix.png as artifacts.

Two writers: ``MlflowLogger`` sits in the trainer's logger list (train.py ``--track mlflow``), and
``CompareTracker`` logs compare.py's runs from their folders as each finishes, under one parent run per
comparison; a comparison's train.py processes never write the store themselves (many nodes writing one
SQLite file over a network filesystem is not safe). A run already logged (same ``run_dir`` tag) is not
logged twice. Any tracker failure (store locked, server down, package missing) is one warning and the
tracker goes quiet; training and the comparison go on.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

from utils.io.run_log import RunLogger, read_results
from utils.io.summary import read_summary, yaml_mapping

LOGGER = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
INSTALL = "pip install -r requirements-track.txt"
SETTINGS = ("data", "cfg", "imgsz", "epochs", "batch_size", "precision", "optimizer", "workers", "seed")
ARTIFACTS = ("results.png", "confusion_matrix.png")
BATCH = 1000  # MLflow's most metrics per log_batch call


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the offline SQLite store in the repository's runs/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'runs' / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its files: beside a SQLite store, else the server's choice (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def metric_name(text: str) -> str:
    """A name MLflow accepts (alphanumerics, ``_ - . : /`` and space)."""
    return re.sub(r"[^\w\-. :/]", "_", text)


def run_params(opt: dict[str, Any], hyp: dict[str, Any]) -> dict[str, str]:
    """The params of a run from its opt.yaml and hyp.yaml: loss, assigner, seed, settings, hyp/<key>."""
    params = {"loss": hyp.get("loss", "yolov5"), "assigner": hyp.get("assigner", "default")}
    params.update({k: opt.get(k) for k in SETTINGS if k in opt})
    for k in ("data", "cfg"):  # the file name: the same comparison on two machines has other paths
        if params.get(k):
            params[k] = Path(str(params[k])).name
    params.update({f"hyp/{k}": v for k, v in hyp.items() if k not in ("loss", "assigner")})
    return {k: str(v) for k, v in params.items()}


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """best/* metrics of a summary.json: the final validation of best.pt, overall and per class."""
    out = {"best/mAP50": float(summary["map50"]), "best/mAP50-95": float(summary["map"])}
    out.update({f"best/{name}": float(summary[k]) for k, name in (("p", "precision"), ("r", "recall")) if k in summary})
    for c, v in summary.get("per_class", {}).items():
        out[metric_name(f"best/AP50-95/{c}")] = float(v["ap"])
        out[metric_name(f"best/AP50/{c}")] = float(v["ap50"])
    return out


class Mlflow:
    """A guarded MLflow client: ``call(fn)`` runs ``fn(client)`` and turns the first failure into one
    warning, after which every call is skipped (returns None)."""

    def __init__(self, what: str):
        self.what, self.client, self.failed = what, None, False
        self.call(lambda c: None)

    def call(self, fn: Callable[[Any], Any]) -> Any:
        if self.failed:
            return None
        try:
            if self.client is None:
                self.client = self._connect()
            return fn(self.client)
        except Exception as e:  # noqa: BLE001  (store locked, server down, bad URI: tracking only)
            self.failed = True
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            LOGGER.warning("WARNING: MLflow tracking of %s stopped (%s); the training goes on", self.what, reason)
            return None

    @staticmethod
    def _connect() -> Any:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ImportError(f"--track mlflow needs MLflow: {INSTALL}") from None
        uri = tracking_uri()
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=uri)

    def experiment(self, name: str) -> str | None:
        def get(c: Any) -> str:
            found = c.get_experiment_by_name(name)
            return found.experiment_id if found else c.create_experiment(name, artifact_location=artifact_root(tracking_uri()))
        return self.call(get)

    def run_for(self, experiment_id: str, tag: str, value: str, name: str, parent: str | None = None) -> tuple[str, bool] | None:
        """(run id, whether it was there already) of the run tagged ``tag = value``, made when missing."""
        def get(c: Any) -> tuple[str, bool]:
            found = c.search_runs([experiment_id], filter_string=f"tags.{tag} = '{value}'", max_results=1)
            if found:
                return found[0].info.run_id, True
            tags = {tag: value, **({"mlflow.parentRunId": parent} if parent else {})}
            return c.create_run(experiment_id, run_name=name, tags=tags).info.run_id, False
        return self.call(get)

    def log_metrics(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        import time
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(items), BATCH):
            self.call(lambda c, part=items[i:i + BATCH]: c.log_batch(run_id, metrics=part))

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's most params per log_batch call
            self.call(lambda c, part=items[i:i + 100]: c.log_batch(run_id, params=part))

    def log_files(self, run_id: str, folder: Path, names: tuple[str, ...]) -> None:
        for n in names:
            if (folder / n).is_file():
                self.call(lambda c, f=folder / n: c.log_artifact(run_id, str(f)))


def epoch_rows(folder: Path) -> list[tuple[int, dict[str, float]]]:
    """(epoch, {column: value}) of each row of a run's results.csv."""
    f = folder / "results.csv"
    if not f.exists():
        return []
    keys, rows = read_results(f)
    return [(int(r[0]), {metric_name(k): v for k, v in zip(keys[1:], r[1:])}) for r in rows]


def log_run_folder(ml: Mlflow, experiment_id: str, folder: Path, parent: str | None = None) -> str | None:
    """Log a finished run folder (opt.yaml, hyp.yaml, results.csv, summary.json, plots) as one MLflow run;
    a folder logged before is left as it is. Returns the run id (None when tracking failed)."""
    summary = read_summary(folder / "summary.json")
    got = ml.run_for(experiment_id, "run_dir", str(folder), folder.name, parent)
    if got is None or got[1]:
        return got[0] if got else None
    run_id = got[0]
    opt, hyp = yaml_mapping(folder / "opt.yaml"), yaml_mapping(folder / "hyp.yaml")
    ml.log_params(run_id, {**run_params(opt, hyp), "seed": str(summary["seed"])})
    for epoch, values in epoch_rows(folder):
        ml.log_metrics(run_id, values, epoch)
    ml.log_metrics(run_id, summary_metrics(summary), int(summary["epochs"]))
    ml.log_files(run_id, folder, ARTIFACTS)
    ml.call(lambda c: c.set_terminated(run_id))
    return run_id


class MlflowLogger(RunLogger):
    """The trainer's MLflow logger (train.py ``--track mlflow``): a run per run folder (a resumed run
    continues its own), params at start, results.csv's row each epoch, best/* and plots at the end."""

    def __init__(self, experiment: str = "train"):
        self.ml = Mlflow("this run")
        self.experiment, self.run_id = experiment, None

    def start(self, save_dir: Path, opt: dict[str, Any], hyp: dict[str, Any]) -> None:
        exp_id = self.ml.experiment(self.experiment)
        got = self.ml.run_for(exp_id, "run_dir", str(save_dir), save_dir.name) if exp_id else None
        if got is None:
            return
        self.run_id = got[0]
        if got[1]:  # resumed: params are there already, and MLflow refuses to change one
            self.ml.call(lambda c: c.update_run(self.run_id, status="RUNNING"))
        else:
            self.ml.log_params(self.run_id, run_params(opt, hyp))
        LOGGER.info("MLflow: run %s in %s", self.run_id, tracking_uri())

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        if self.run_id:
            self.ml.log_metrics(self.run_id, {metric_name(k): v for k, v in values.items()}, epoch)

    def end(self, save_dir: Path, summary: dict[str, Any]) -> None:
        if self.run_id:
            self.ml.log_metrics(self.run_id, summary_metrics(summary), int(summary["epochs"]))
            self.ml.log_files(self.run_id, save_dir, ARTIFACTS)
            self.ml.call(lambda c: c.set_terminated(self.run_id))
            self.run_id = None

    def close(self) -> None:
        if self.run_id:  # stopped before its end (Ctrl-C, divergence)
            self.ml.call(lambda c: c.set_terminated(self.run_id, status="KILLED"))
            self.run_id = None


class CompareTracker:
    """compare.py ``--track mlflow``: one parent run per comparison folder, a child per finished
    (strategy, seed) logged from its folder, and at the end results.md / results.csv and the verdict."""

    def __init__(self, exp: Path, experiment: str = "compare"):
        self.exp, self.ml = exp, Mlflow(f"comparison {exp}")
        self.experiment_id = self.ml.experiment(experiment)
        got = self.ml.run_for(self.experiment_id, "compare_dir", str(exp), exp.name) if self.experiment_id else None
        self.parent = got[0] if got else None

    def run_finished(self, folder: Path) -> None:
        if self.parent and (folder / "summary.json").exists():
            log_run_folder(self.ml, self.experiment_id, folder, self.parent)

    def comparison_done(self, folders: list[Path]) -> None:
        """Every finished run not logged yet (a run finished while tracking was off), then the tables."""
        if not self.parent:
            return
        for f in folders:
            self.run_finished(f)
        md = self.exp / "results.md"
        verdict = md.read_text().split("\n\n")[0].lstrip("# ").strip() if md.exists() else ""
        if verdict:
            self.ml.call(lambda c: c.set_tag(self.parent, "verdict", verdict[:5000]))
        self.ml.log_files(self.parent, self.exp, ("results.md", "results.csv", "runs.csv"))
        self.ml.call(lambda c: c.set_terminated(self.parent))


__all__ = ["MlflowLogger", "CompareTracker", "log_run_folder", "tracking_uri", "run_params", "summary_metrics"]
