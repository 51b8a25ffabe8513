"""Finished training runs read back from their folders, wherever they ran.

A run folder is what ``train.py`` writes: ``opt.yaml`` (the settings, at the start), ``results.csv``
(one row per epoch) and ``summary.json`` (the final validation of best.pt, written last, so its
presence means "finished"). ``compare`` also leaves ``times.json`` (when it launched and saw the end of
the run); folders trained elsewhere (``--plan`` on a cluster) fall back to the files' times.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from utils.io.paths import write_atomic
from utils.io.run_log import read_results
from utils.io.summary import SPEED_KEYS, read_summary, summary_problem, yaml_mapping  # noqa: F401  (re-exported)
from utils.loss import strategy_label

TIMES = "times.json"
# the settings that must agree for runs to be compared; data and cfg by file name, because the same
# comparison run on two machines sees the same YAML under different absolute paths; precision as the
# run resolved it (summary.json: fp32 / bf16 / fp16; "unrecorded" for runs from before it was recorded)
SAME_SETTINGS = ("data", "cfg", "imgsz", "epochs", "precision")
MAP_COLUMN = "metrics/mAP_0.5:0.95"
GENERIC_STEMS = ("data", "dataset")  # dataset YAML names that say nothing: the folder names the data


@dataclass
class RunRecord:
    """One finished (strategy, seed) run; ``loss`` is the strategy's row label, ``loss+assigner`` where
    the run's hyp chose another matching rule than the loss's own (``utils.loss.strategy_label``).

    ``ap`` / ``recall``: class name -> AP50-95 / recall at the best-F1 threshold of best.pt;
    ``curve``: validation mAP50-95 per epoch; ``started`` / ``finished``: unix seconds."""
    loss: str
    seed: int
    epochs: int
    map50: float
    map: float
    ap: dict[str, float]
    recall: dict[str, float]
    started: float
    finished: float
    train_s: float
    folder: Path
    settings: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, float] = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)

    @property
    def collapsed(self) -> list[str]:
        """Classes with labels that the run never recalls at its best-F1 threshold."""
        return [c for c, r in self.recall.items() if r == 0]


def read_times(folder: Path) -> dict[str, float]:
    """``times.json`` of a run folder; a file that is not a JSON object of numbers (compare's own,
    edited or damaged) counts as absent: the files' own times stand in."""
    f = folder / TIMES
    try:
        data = json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             and math.isfinite(v) for v in data.values()):
        return {}
    return {k: float(v) for k, v in data.items()}


def note_start(folder: Path) -> float:
    """Record a launch in ``folder/times.json``: the first launch stays ``started``."""
    folder.mkdir(parents=True, exist_ok=True)
    times = read_times(folder)
    now = time.time()
    times.setdefault("started", now)
    times["launched"] = now
    write_atomic(folder / TIMES, json.dumps(times))
    return now


def note_end(folder: Path) -> None:
    """Record the end of a launch; ``train_s`` adds up the launches of a resumed run."""
    times = read_times(folder)
    now = time.time()
    times["finished"] = now
    times["train_s"] = times.get("train_s", 0.0) + now - times.get("launched", now)
    write_atomic(folder / TIMES, json.dumps(times))


def dataset_name(data: Any) -> str:
    """How the tables name a dataset YAML: its stem (``bccd``), or its folder where the stem says nothing
    (``datasets/raccoon/data.yaml`` -> ``raccoon``, as every converter writes ``data.yaml``)."""
    if not data:
        return "the data"
    path = Path(str(data))
    generic = path.stem.lower() in GENERIC_STEMS and path.parent.name not in ("", ".")
    return path.parent.name if generic else path.stem


def read_curve(folder: Path) -> list[float]:
    """Validation mAP50-95 per epoch from a run's results.csv ([] without the file or the column)."""
    f = folder / "results.csv"
    if not f.is_file():
        return []
    try:
        keys, rows = read_results(f)
    except (OSError, ValueError, IndexError) as e:
        raise ValueError(f"{f}: not a results.csv that train.py wrote ({e})") from None
    return [r[keys.index(MAP_COLUMN)] for r in rows] if MAP_COLUMN in keys else []


def read_run(folder: Path) -> RunRecord | None:
    """The record of a finished run folder, or None when it has no ``summary.json`` yet."""
    summary_file = folder / "summary.json"
    if not summary_file.exists():
        return None
    s = read_summary(summary_file)
    opt_file = folder / "opt.yaml"
    opt = yaml_mapping(opt_file)
    times = read_times(folder)
    started = times.get("started", opt_file.stat().st_mtime if opt_file.exists() else summary_file.stat().st_mtime)
    finished = times.get("finished", summary_file.stat().st_mtime)
    assigner = yaml_mapping(folder / "hyp.yaml").get("assigner")
    settings = {k: opt.get(k) for k in SAME_SETTINGS}
    for k in ("data", "cfg"):
        settings[k] = Path(str(settings[k])).name if settings[k] else settings[k]
    settings["precision"] = s.get("precision", "unrecorded")
    settings["dataset"] = dataset_name(opt.get("data"))
    return RunRecord(
        loss=strategy_label(s["loss"], assigner if isinstance(assigner, str) else None), seed=s["seed"],
        epochs=s["epochs"], map50=float(s["map50"]), map=float(s["map"]),
        ap={c: float(v["ap"]) for c, v in s["per_class"].items()},
        recall={c: float(v["r"]) for c, v in s["per_class"].items()},
        started=float(started), finished=float(finished), train_s=float(times.get("train_s", finished - started)),
        folder=folder, settings=settings, curve=read_curve(folder),
        speed={k: float(s[k]) for k in SPEED_KEYS if k in s})


def summary_files(root: Path) -> list[Path]:
    """Every summary.json under ``root``, following symbolic links to folders (a run folder linked in from
    elsewhere counts; ``Path.rglob`` would skip it), each real file once even when reached twice."""
    seen, out = set(), []
    for top, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link back up the tree, or a second link to one folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        if "summary.json" in files:
            out.append(Path(top) / "summary.json")
    return sorted(out)


def check_same_settings(records: list[RunRecord], where: str) -> None:
    """ValueError in one line when runs differ in a setting of ``SAME_SETTINGS`` (naming the setting and
    two folders); ``where`` starts the message (``--report``, the comparison folder)."""
    if not records:
        return
    first = records[0]
    for r in records[1:]:
        for k in SAME_SETTINGS:
            if r.settings.get(k) != first.settings.get(k):
                raise ValueError(f"{where}: runs differ in {k}: {first.settings.get(k)} in {first.folder}, "
                                 f"{r.settings.get(k)} in {r.folder}")


def find_runs(dirs: Iterable[Path]) -> list[RunRecord]:
    """Every finished run under the given folders (a run folder itself, a compare folder, a project).

    Errors (ValueError, naming the folders and the setting) on: a folder with no finished run, a
    (loss, seed) found twice, runs whose dataset / model / image size / epochs differ."""
    records, empty = [], []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"--report: {d} is not a folder")
        found = [r for f in summary_files(d) if (r := read_run(f.parent)) is not None]
        if not found:
            empty.append(str(d))
        records += found
    if empty:
        raise ValueError(f"--report: no finished run (a folder with summary.json) under {', '.join(empty)}")
    seen: dict[tuple[str, int], Path] = {}
    for r in records:
        if (r.loss, r.seed) in seen:
            raise ValueError(f"--report: {r.loss} seed {r.seed} is there twice: {seen[r.loss, r.seed]} and {r.folder}")
        seen[r.loss, r.seed] = r.folder
    check_same_settings(records, "--report")
    return records


__all__ = ["RunRecord", "read_run", "read_summary", "summary_problem", "find_runs", "check_same_settings",
           "dataset_name", "note_start", "note_end", "SAME_SETTINGS"]
