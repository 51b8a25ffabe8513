"""What a checkpoint recorded about the run that trained it, used as defaults by val.py and detect.py.

Our checkpoints keep train.py's options under ``opt`` (``imgsz`` after rounding to the stride,
``data`` as given). Official YOLOv5 files keep theirs the same way: ``opt.imgsz`` (v6+), or
``opt.img_size = [train, test]`` (v5 and older), and ``opt.data`` relative to the YOLOv5 checkout.
Each ``pick_*`` returns the value and a short phrase saying where it came from, for the one line the
CLI prints: a user who left a flag out sees what was used instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]


def _positive_int(x: Any) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and int(x) == x and x > 0 else None


def recorded_imgsz(opt: dict[str, Any]) -> tuple[int, str] | None:
    """(image size in pixels, the key it came from) from a checkpoint's training options, or None."""
    for key in ("imgsz", "img_size"):
        value = opt.get(key)
        if isinstance(value, (list, tuple)) and value:
            value = value[-1]  # YOLOv5 <= v5.0: [train, test]; val and detect use the test size
        size = _positive_int(value)
        if size is not None:
            return size, key
    return None


def recorded_data(opt: dict[str, Any], roots: Sequence[Path] | None = None) -> tuple[Path | None, str]:
    """(the dataset YAML the checkpoint was trained on if it exists here, else None; why).

    A relative path is looked up from each of ``roots`` in turn (by default the current folder, then
    this repository, where train.py's own data/*.yaml live).
    """
    data = opt.get("data")
    if not isinstance(data, str) or not data:
        return None, "the checkpoint records none"
    path = Path(data).expanduser()
    roots = (Path.cwd(), REPO_ROOT) if roots is None else roots
    candidates = [path] if path.is_absolute() else [Path(r) / path for r in roots]
    for c in candidates:
        if c.is_file():
            return c, f"from the checkpoint's opt.data ({data})"
    return None, f"the recorded {data} does not exist here"


def pick_imgsz(given: int | None, meta: dict[str, Any], fallback: int = 640) -> tuple[int, str]:
    """The image size to use: ``given`` (--img), else the checkpoint's, else ``fallback``; and its source."""
    if given is not None:
        return given, "from --img"
    found = recorded_imgsz(meta.get("opt") or {})
    if found is None:
        return fallback, "the default, as the checkpoint records none"
    return found[0], f"from the checkpoint's opt.{found[1]}"


def pick_data(given: str | None, meta: dict[str, Any], fallback: str | Path) -> tuple[str, str]:
    """The dataset YAML to use: ``given`` (--data), else the checkpoint's if it exists, else ``fallback``."""
    if given is not None:
        return given, "from --data"
    found, why = recorded_data(meta.get("opt") or {})
    if found is None:
        return str(fallback), f"the default, as {why}"
    return str(found), why
