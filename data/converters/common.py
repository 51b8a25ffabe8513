"""Helpers shared by the converters: placing image files and writing YOLO rows / YAMLs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml


def place_image(src: Path, dst: Path, link: bool = True) -> None:
    """Hard-link ``src`` to ``dst`` (falls back to a copy); the source is never modified."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # other file system or no permission: copy instead
            pass
    shutil.copy2(src, dst)


def yolo_row(cls: int, x1: float, y1: float, x2: float, y2: float, w: float, h: float) -> str:
    """Pixel corners -> ``"cls xc yc bw bh"`` normalised, 6 decimals."""
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def write_dataset_yaml(out: Path, names: list[str], splits: list[str]) -> Path:
    """``<out>/data.yaml`` with ``path: .`` (relative to the YAML's folder) and the given splits."""
    f = out / "data.yaml"
    existing = yaml.safe_load(f.read_text()) if f.is_file() else {}
    data = {"path": "."}
    for s in ("train", "val", "test"):
        if s in splits or s in (existing or {}):
            data[s] = f"images/{s}"
    data["names"] = dict(enumerate(names))
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return f
