"""What the converters share: errors, the hash split, placing images, YOLO rows and data.yaml."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from utils.core.yaml_file import load_yaml
from utils.core.errors import UserError

SPLITS = ("train", "val", "test")
SMALL_DATASET = 1000  # train images below which data.yaml carries train_defaults for a first training from scratch
# From scratch on a few hundred images YOLOv5's defaults (SGD lr0 0.01, nominal batch 64 = one optimiser step
# per 4 batches of 16) make ~3 steps per epoch and learn next to nothing in 30 epochs (issue 28: mAP50 0.068
# on 160 train images). Every batch a step (nbs = batch 8) and ultralytics' auto optimizer (AdamW, small lr)
# is what the built-in dataset trains with (data/shapes.yaml; docs/default_training.md).
SMALL_DATASET_DEFAULTS = {"optimizer": "auto", "batch_size": 8, "epochs": 100, "hyp": {"nbs": 8}}


class ConverterError(UserError):
    """Input a converter cannot use (empty folder, unparsable XML/JSON, bad option); names the file."""


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Both in [0, 1) and their sum below 1, or ConverterError naming the flag."""
    for flag, f in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= f < 1:
            raise ConverterError(f"{flag} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1:
        raise ConverterError(f"--val-fraction + --test-fraction must be < 1 (leave images to train), "
                             f"got {val_fraction} + {test_fraction}")


def hash_split(file_name: str, val_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """'train', 'val' or 'test' for one image, from a seeded SHA-1 of its file name alone.

    The split of a file depends on nothing but its name, the fractions and the seed, so adding
    or removing other files never moves it (unlike a shuffled list cut at fixed fractions).
    ``u`` uniform in [0, 1): test below ``test_fraction``, val up to ``test + val``, else train.
    """
    digest = hashlib.sha1(f"{seed}:{file_name}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2 ** 64
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


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


class UniqueNames:
    """The output names of one conversion. Labels are ``<stem>.txt``, so two images of one split that
    share a base name (``a/001.png`` and ``b/001.png``, or ``x.jpg`` and ``x.png``) would share a label
    file: the later one is written as ``<stem>_2<suffix>`` (``_3`` ...) with a warning naming both."""

    def __init__(self) -> None:
        self.taken: dict[tuple[str, str], Path] = {}  # (split, stem) -> the source that has it

    def claim(self, split: str, src: Path, name: str) -> str:
        """The free output name for ``src`` (to be written as ``name``) in ``split``."""
        stem, suffix = Path(name).stem, Path(name).suffix
        out, n = name, 1
        while (split, Path(out).stem) in self.taken:
            n += 1
            out = f"{stem}_{n}{suffix}"
        if out != name:
            logging.getLogger(__name__).warning("%s shares the base name %s with %s; written as %s", src, stem,
                                                self.taken[split, stem], out)
        self.taken[split, Path(out).stem] = src
        return out


def image_size(im_file: Path) -> tuple[int, int]:
    """(w, h) pixels read from the image header, or ConverterError naming the file."""
    try:
        with Image.open(im_file) as im:
            return im.size
    except OSError as e:
        raise ConverterError(f"{im_file}: cannot read the image size ({e})") from e


def write_labels(out: Path, split: str, stem: str, rows: list[str]) -> None:
    """``<out>/labels/<split>/<stem>.txt`` with one YOLO row a line (empty file = background image)."""
    lb = out / "labels" / split / f"{stem}.txt"
    lb.parent.mkdir(parents=True, exist_ok=True)
    lb.write_text("".join(r + "\n" for r in rows))


def yolo_row(cls: int, x1: float, y1: float, x2: float, y2: float, w: float, h: float) -> str:
    """Pixel corners -> ``"cls xc yc bw bh"`` normalised, 6 decimals."""
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def write_dataset_yaml(out: Path, names: list[str], splits: list[str]) -> Path:
    """``<out>/data.yaml`` with ``path: .`` (relative to the YAML's folder) and the given splits.

    Splits already in an existing data.yaml are kept (COCO splits converted one JSON at a time).
    Without a val split, ``val`` reads the train images (with a warning): train.py needs one.
    """
    f = out / "data.yaml"
    existing = (load_yaml(f) if f.is_file() else None) or {}
    data: dict[str, Any] = {"path": "."}
    for s in SPLITS:
        if s in splits:
            data[s] = f"images/{s}"
        elif s in existing:
            data[s] = existing[s]
    if "val" not in data and "train" in data:
        logging.getLogger(__name__).warning("%s: no image fell into val; 'val' reads the train images "
                                            "(raise --val-fraction for a held-out split)", f)
        data["val"] = data["train"]
    data["names"] = dict(enumerate(names))
    n_train = sum(1 for _ in (out / "images" / "train").glob("*")) if "train" in data else 0
    header = ""
    if 0 < n_train < SMALL_DATASET:
        data["train_defaults"] = SMALL_DATASET_DEFAULTS
        header = (f"# train_defaults: settings that learn from scratch on a small dataset ({n_train} train images),\n"
                  "# used by train.py where its command line does not say otherwise (delete them for YOLOv5's)\n")
    f.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return f


def next_command(yaml_file: Path) -> str:
    """The train.py command to run after a conversion (yolov5n at 320 px: minutes per epoch on a CPU)."""
    return f"next: python train.py --data {yaml_file} --cfg models/yolov5n.yaml --img 320"


def run_cli(fn: Callable[[], str], out: str | Path) -> int:
    """Run a converter writing into ``out``; print its summary line and the train.py command to run next,
    or ``error: ...`` (one line) and return 1."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(fn())
        print(next_command(Path(out) / "data.yaml"))
    except (ConverterError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
