"""Finished training runs read back from their folders, wherever they ran.

A run folder is what ``train.py`` writes: ``opt.yaml`` (the settings, at the start), ``results.csv``
(one row per epoch) and ``summary.json`` (the final validation of best.pt, written last, so its
presence means "finished"). ``compare`` also leaves ``times.json`` (when it launched and saw the end of
the run); folders trained elsewhere (``--plan`` on a cluster) fall back to the files' times.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from utils.io.paths import write_atomic
from utils.io.run_log import read_results
from utils.core.yaml_file import load_yaml
from utils.loss import strategy_label

TIMES = "times.json"
SUMMARY_KEYS = ("loss", "seed", "epochs", "map50", "map", "per_class")
# the settings that must agree for runs to be compared; data and cfg by file name, because the same
# comparison run on two machines sees the same YAML under different absolute paths; precision as the
# run resolved it (summary.json: fp32 / bf16 / fp16; "unrecorded" for runs from before it was recorded)
SAME_SETTINGS = ("data", "cfg", "imgsz", "epochs", "precision")
MAP_COLUMN = "metrics/mAP_0.5:0.95"


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
    f = folder / TIMES
    return json.loads(f.read_text()) if f.exists() else {}


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


def read_run(folder: Path) -> RunRecord | None:
    """The record of a finished run folder, or None when it has no ``summary.json`` yet."""
    summary_file = folder / "summary.json"
    if not summary_file.exists():
        return None
    try:
        s = json.loads(summary_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{summary_file}: not valid JSON ({e}); a run that was cut off while writing it: delete "
                         "the file to train that run again") from None
    missing = [k for k in SUMMARY_KEYS if k not in s] if isinstance(s, dict) else list(SUMMARY_KEYS)
    if missing:
        raise ValueError(f"{summary_file}: lacks {', '.join(missing)}; delete the file to train that run again")
    opt_file = folder / "opt.yaml"
    opt = (load_yaml(opt_file) if opt_file.exists() else None) or {}
    times = read_times(folder)
    started = times.get("started", opt_file.stat().st_mtime if opt_file.exists() else summary_file.stat().st_mtime)
    finished = times.get("finished", summary_file.stat().st_mtime)
    curve = []
    if (folder / "results.csv").exists():
        keys, rows = read_results(folder / "results.csv")
        curve = [r[keys.index(MAP_COLUMN)] for r in rows]
    hyp_file = folder / "hyp.yaml"
    assigner = (load_yaml(hyp_file) or {}).get("assigner") if hyp_file.exists() else None
    settings = {k: opt.get(k) for k in SAME_SETTINGS}
    for k in ("data", "cfg"):
        settings[k] = Path(settings[k]).name if settings[k] else settings[k]
    settings["precision"] = s.get("precision", "unrecorded")
    return RunRecord(
        loss=strategy_label(s["loss"], assigner), seed=int(s["seed"]), epochs=int(s["epochs"]), map50=float(s["map50"]), map=float(s["map"]),
        ap={c: float(v["ap"]) for c, v in s["per_class"].items()},
        recall={c: float(v["r"]) for c, v in s["per_class"].items()},
        started=float(started), finished=float(finished), train_s=float(times.get("train_s", finished - started)),
        folder=folder, settings=settings, curve=curve,
        speed={k: float(s[k]) for k in ("train_images_per_s", "loss_step_ms", "peak_memory_mib") if k in s})


def find_runs(dirs: Iterable[Path]) -> list[RunRecord]:
    """Every finished run under the given folders (a run folder itself, a compare folder, a project).

    Errors (ValueError, naming the folders and the setting) on: a folder with no finished run, a
    (loss, seed) found twice, runs whose dataset / model / image size / epochs differ."""
    records, empty = [], []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"--report: {d} is not a folder")
        found = [r for f in sorted(d.rglob("summary.json")) if (r := read_run(f.parent)) is not None]
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
    first = records[0]
    for r in records[1:]:
        for k in SAME_SETTINGS:
            if r.settings.get(k) != first.settings.get(k):
                raise ValueError(f"--report: runs differ in {k}: {first.settings.get(k)} in {first.folder}, "
                                 f"{r.settings.get(k)} in {r.folder}")
    return records


__all__ = ["RunRecord", "read_run", "find_runs", "note_start", "note_end", "SAME_SETTINGS"]
