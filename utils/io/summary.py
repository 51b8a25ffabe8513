"""The files a finished run folder holds for others to read back (compare.py, its MLflow tracker):
``summary.json`` validated once against the shape train.py writes, and its opt.yaml / hyp.yaml as dicts.
Anything else is a ValueError in one line naming the file."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from utils.core.text import short_repr
from utils.core.yaml_file import load_yaml

SUMMARY_KEYS = ("loss", "seed", "epochs", "map50", "map", "per_class")
SPEED_KEYS = ("train_images_per_s", "loss_step_ms", "peak_memory_mib")


def is_number(value: Any) -> bool:
    """A finite JSON number (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summary_problem(s: Any) -> str | None:
    """What is wrong with the content of a summary.json, in words, or None when it has the shape train.py
    writes: ``loss`` (text), ``seed`` and ``epochs`` (integers >= 0 / >= 1), ``map50`` and ``map`` (finite
    numbers), ``per_class`` (class name -> {"ap": number, "r": number, ...}), numbers for the speed keys."""
    if not isinstance(s, dict):
        return f"expected a JSON object, got {type(s).__name__}"
    missing = [k for k in SUMMARY_KEYS if k not in s]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not isinstance(s["loss"], str) or not s["loss"]:
        return f"'loss' must be a strategy name, got {short_repr(s['loss'])}"
    for key, low in (("seed", 0), ("epochs", 1)):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < low:
            return f"'{key}' must be an integer >= {low}, got {short_repr(s[key])}"
    for key in ("map50", "map", *SPEED_KEYS):
        if key in s and not is_number(s[key]):
            return f"'{key}' must be a finite number, got {short_repr(s[key])}"
    if not isinstance(s["per_class"], dict):
        return f"'per_class' must map class names to {{\"ap\": ..., \"r\": ...}}, got {type(s['per_class']).__name__}"
    for name, row in s["per_class"].items():
        for key in ("ap", "r"):
            if not isinstance(row, dict) or key not in row:
                return f"per_class '{name}' lacks '{key}'"
            if not is_number(row[key]):
                return f"per_class '{name}' '{key}' must be a finite number, got {short_repr(row[key])}"
    return None


def read_summary(summary_file: Path) -> dict[str, Any]:
    """The content of a run's summary.json, validated (``summary_problem``); anything else is a
    ValueError in one line naming the file."""
    try:
        s = json.loads(summary_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{summary_file}: not valid JSON ({e}); a run that was cut off while writing it: delete "
                         "the file to train that run again") from None
    except OSError as e:
        raise ValueError(f"{summary_file}: cannot be read ({e.strerror or e})") from None
    problem = summary_problem(s)
    if problem:
        raise ValueError(f"{summary_file}: {problem}; delete the file to train that run again")
    return s


def yaml_mapping(path: Path) -> dict[str, Any]:
    """A run's opt.yaml / hyp.yaml as a dict ({} when absent or not a mapping)."""
    data = load_yaml(path) if path.is_file() else None
    return data if isinstance(data, dict) else {}
