"""Run-folder naming: ``runs/detect/exp``, ``exp2``, ``exp3`` ... as YOLOv5 does."""
from __future__ import annotations

from pathlib import Path


def increment_path(path: str | Path, exist_ok: bool = False, sep: str = "", mkdir: bool = False) -> Path:
    """Return ``path`` if it is free (or ``exist_ok``), else the first free ``{path}{sep}{n}`` for n = 2, 3, ...

    A file keeps its suffix after the number (``last.pt`` -> ``last2.pt``). With ``mkdir`` the
    resulting path is created as a directory (parents included).
    """
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        n = 2
        while Path(f"{stem}{sep}{n}{suffix}").exists():
            n += 1
        path = Path(f"{stem}{sep}{n}{suffix}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path
