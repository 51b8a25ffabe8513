"""compare.json: what makes a folder one comparison, and what has been looked at in it.

    {"settings": {...},                 the training settings shared by every run (compare.py's SAME_IF)
     "looks": [{loss: [seeds]}, ...],   the finished runs at each look (fixed seeds: each completed command)
     "train_defaults": {...} | null,    the dataset YAML's train_defaults when the runs were made
     "auto": {"max_seeds": N, "stopped": {loss: why}, "reopened": [...]}}
                                        --seeds auto: the cap, the calls of the last round, and what a
                                        raised cap reopened

One reader (``read_state``) checks the whole shape, so every damaged or hand-edited file ends in one
line naming it; files older than the "looks" key held the settings alone and still read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from utils.io.paths import write_atomic

STATE = "compare.json"
SHAPE = '{"settings": {...}, "looks": [{loss: [seeds]}, ...]}'


def seeds_ok(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)


def state_problem(state: Any) -> str | None:
    """What is wrong with compare.json's content (already in the ``{"settings", "looks"}`` form), or None."""
    if not isinstance(state, dict) or not isinstance(state.get("settings"), dict):
        return "'settings' must be an object"
    looks = state.get("looks")
    if not isinstance(looks, list):
        return "'looks' must be a list"
    for i, look in enumerate(looks):
        if not isinstance(look, dict) or not all(isinstance(k, str) and seeds_ok(v) for k, v in look.items()):
            return f"look {i + 1} must map each strategy to a list of seeds (integers >= 0)"
    auto = state.get("auto")
    if auto is not None and not (isinstance(auto, dict) and isinstance(auto.get("max_seeds"), int)
                                 and isinstance(auto.get("stopped"), dict)
                                 and all(isinstance(v, str) for v in auto["stopped"].values())):
        return "'auto' must be {\"max_seeds\": N, \"stopped\": {loss: reason}}"
    reopened = (auto or {}).get("reopened", [])
    if not isinstance(reopened, list) or not all(isinstance(v, str) for v in reopened):
        return "'auto.reopened' must be a list of sentences"
    return None


def read_state(exp: Path) -> dict[str, Any]:
    """compare.json of the comparison folder ``exp`` as ``{"settings": {...}, "looks": [...], ...}``
    (``{"settings": {}, "looks": []}`` when there is none); a file of another shape, not JSON, or not a
    file -> ValueError in one line naming it."""
    f = exp / STATE
    fix = "delete it (its runs are kept) or pass --new"
    if not f.exists() and not f.is_symlink():
        return {"settings": {}, "looks": []}
    try:
        data = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not valid JSON ({e}); {fix}") from None
    except OSError as e:
        raise ValueError(f"{f} cannot be read as a file ({e.strerror or e}); {fix}") from None
    state = data if isinstance(data, dict) and "settings" in data else {"settings": data, "looks": []}
    problem = state_problem(state)
    if problem:
        raise ValueError(f"{f}: {problem}; expected {SHAPE}; {fix}")
    return state


def write_state(exp: Path, state: dict[str, Any]) -> None:
    """Write compare.json atomically (a kill mid-write leaves the old file)."""
    write_atomic(exp / STATE, json.dumps(state, indent=1))


__all__ = ["read_state", "write_state", "state_problem", "STATE"]
