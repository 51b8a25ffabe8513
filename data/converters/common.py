"""What the converters share: errors, the hash split, placing images, YOLO rows and data.yaml."""
from __future__ import annotations

import filecmp
import hashlib
import logging
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from utils.core.errors import UserError
from utils.core.text import short_repr
from utils.core.yaml_file import YamlFileError, load_yaml

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


def _unit_hash(file_name: str, seed: int) -> float:
    """A seeded SHA-1 of a file name as a number uniform in [0, 1)."""
    digest = hashlib.sha1(f"{seed}:{file_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)  # 1e-9: 0.2 * 200 is 40.000000000000007 in floats, 0.35 * 10 3.4999...


def hash_splits(file_names: Sequence[str], val_fraction: float, test_fraction: float,
                seed: int = 0) -> list[str]:
    """'train', 'val' or 'test' for each file name: exactly round(test * n) test and round((test + val) * n)
    test + val images of the n, those with the smallest seeded SHA-1 of their name.

    Ranking by the hash, not cutting it at the fraction, makes the counts exact (a cut at 0.2 put 31 of 200
    images into val). The ranks depend only on the names, so the same files always split the same way,
    and adding m files moves at most m + 1 of the others across each cut (only those whose hash lies
    between the old and the new cut; the hash order of the others never changes). Growing
    ``val_fraction`` only moves train images into val.
    """
    n = len(file_names)
    order = sorted(range(n), key=lambda i: (_unit_hash(file_names[i], seed), file_names[i]))
    n_test = _round_half_up(test_fraction * n)
    n_held = _round_half_up((test_fraction + val_fraction) * n)
    splits = ["train"] * n
    for rank, i in enumerate(order[:n_held]):
        splits[i] = "test" if rank < n_test else "val"
    return splits


def place_image(src: Path, dst: Path, link: bool = True) -> None:
    """Hard-link ``src`` to ``dst`` (falls back to a copy); the source is never modified. A ``dst`` that
    already is ``src`` (converting in place, or linked by an earlier conversion) is left as it is."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # other file system or no permission: copy instead
            pass
    shutil.copy2(src, dst)


def _is_under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def check_in_place(out: Path, placements: Sequence[tuple[Path, Path]]) -> None:
    """Refuse, before anything is written, a conversion that would put a source image lying inside
    ``out/images`` or ``out/labels`` anywhere but where it already is: writing there could replace the
    source, or leave it in a second split. ``placements``: (source image, output image) pairs."""
    for src, dst in placements:
        if (_is_under(src, out / "images") or _is_under(src, out / "labels")) and src.resolve() != dst.resolve():
            raise ConverterError(f"{src} lies inside --out {out} and would be written as {dst}; converting in "
                                 f"place works only where every image already sits in its split's folder (e.g. "
                                 f"--images {out / 'images' / 'train'} --split train); choose another --out")


class UniqueNames:
    """The output names of one conversion. Labels are ``<stem>.txt``, so two images of one split that
    share a base name (``a/001.png`` and ``b/001.png``, or ``x.jpg`` and ``x.png``) would share a label
    file: the later one is written as ``<stem>_2<suffix>`` (``_3`` ...) with a warning naming both.

    With ``out``, the images an earlier conversion wrote to ``out/images/<split>`` count too (a second
    JSON of the same split): a name is free only if no image of that stem is there, or the one there is
    this very source (the same file, or the same bytes: a rerun), so no earlier image or label is replaced."""

    def __init__(self, out: Path | None = None) -> None:
        self.taken: dict[tuple[str, str], Path] = {}  # (split, stem) -> the source that has it
        self.out = out
        self.earlier: dict[str, dict[str, list[Path]]] = {}  # split -> stem -> images already in out

    def _earlier_other(self, split: str, stem: str, src: Path) -> Path | None:
        """An image of ``stem`` an earlier conversion left in ``out/images/split`` that is not ``src``."""
        if self.out is None:
            return None
        if split not in self.earlier:
            folder = self.out / "images" / split
            by_stem: dict[str, list[Path]] = {}
            for f in sorted(folder.iterdir()) if folder.is_dir() else []:
                by_stem.setdefault(f.stem, []).append(f)
            self.earlier[split] = by_stem
        for f in self.earlier[split].get(stem, []):
            if not (f.is_file() and (os.path.samefile(src, f) or filecmp.cmp(src, f, shallow=False))):
                return f
        return None

    def claim(self, split: str, src: Path, name: str) -> str:
        """The free output name for ``src`` (to be written as ``name``) in ``split``."""
        stem, suffix = Path(name).stem, Path(name).suffix
        out, n = name, 1
        while (split, Path(out).stem) in self.taken or self._earlier_other(split, Path(out).stem, src):
            n += 1
            out = f"{stem}_{n}{suffix}"
        if out != name:
            other = self.taken.get((split, stem)) or f"{self._earlier_other(split, stem, src)} (an earlier conversion's)"
            logging.getLogger(__name__).warning("%s shares the base name %s with %s; written as %s", src, stem,
                                                other, out)
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


def write_dataset_yaml(out: Path, names: list[str], splits: list[str], text: str | None = None) -> Path:
    """Write ``<out>/data.yaml``: ``text`` from :func:`plan_dataset_yaml`, or planned here. Written to a
    temporary file first, so that a failure never leaves a truncated data.yaml."""
    f = out / "data.yaml"
    text = plan_dataset_yaml(out, names, splits, count_train_images(out)) if text is None else text
    tmp = f.with_name(f".{f.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, f)
    finally:
        tmp.unlink(missing_ok=True)
    return f


def count_train_images(out: Path, adding: Sequence[str] = ()) -> int:
    """Files in ``out/images/train`` once the names in ``adding`` are placed there."""
    folder = out / "images" / "train"
    have = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
    return len(have | set(adding))


def plan_dataset_yaml(out: Path, names: list[str], splits: list[str], n_train: int) -> str:
    """The text ``<out>/data.yaml`` will have after converting ``splits`` (``n_train``: train images then).

    A new file gets ``path: .`` (relative to the YAML's folder), the splits, ``names`` and, below
    ``SMALL_DATASET`` train images, ``train_defaults``; without a val split ``val`` reads the train images
    (with a warning): train.py needs one. An existing file (COCO splits converted one JSON at a time) keeps
    everything the user wrote -- comments, extra keys, their edits: only the converted splits' keys are
    set, and keys it lacks are added; ConverterError naming the file, before anything is written, where its
    names differ from these, its ``path`` leads elsewhere, or it cannot be edited key by key.
    """
    f = out / "data.yaml"
    if f.exists():
        return _updated_yaml(f, names, splits, n_train)
    data: dict[str, Any] = {"path": ".", **{s: f"images/{s}" for s in SPLITS if s in splits}}
    _val_fallback(f, data, {})
    data["names"] = dict(enumerate(names))
    if 0 < n_train < SMALL_DATASET and "train" in data:
        data["train_defaults"] = SMALL_DATASET_DEFAULTS
        return (f"# train_defaults: settings that learn from scratch on a small dataset ({n_train} train images),\n"
                "# used by train.py where its command line does not say otherwise (delete them for YOLOv5's)\n"
                + yaml.safe_dump(data, sort_keys=False))
    return yaml.safe_dump(data, sort_keys=False)


def _val_fallback(f: Path, new: dict[str, Any], old: dict[str, Any]) -> None:
    if "val" not in new and "val" not in old and ("train" in new or "train" in old):
        logging.getLogger(__name__).warning("%s: no image fell into val; 'val' reads the train images "
                                            "(raise --val-fraction for a held-out split)", f)
        new["val"] = new.get("train", old.get("train"))


def _class_names(value: Any) -> list[str] | None:
    """``names`` of a dataset YAML (list, or dict index -> name) as a list; None where absent or unreadable."""
    if isinstance(value, dict):
        try:
            return [str(value[k]) for k in sorted(value)]
        except TypeError:
            return None
    return [str(v) for v in value] if isinstance(value, list) else None


def _updated_yaml(f: Path, names: list[str], splits: list[str], n_train: int) -> str:
    """The text of the existing ``f`` with only the converter's keys set (see :func:`plan_dataset_yaml`)."""
    try:
        old = load_yaml(f)
    except YamlFileError as e:
        raise ConverterError(f"{e}; fix it, or convert into another --out") from None
    if not isinstance(old, dict):
        raise ConverterError(f"{f}: expected a dataset YAML of keys (path, train, val, names), got "
                             f"{type(old).__name__}; fix it, or convert into another --out")
    if "names" in old and _class_names(old["names"]) != names:
        raise ConverterError(f"{f} names the classes {short_repr(old['names'])}, this conversion "
                             f"{short_repr(names)}: their ids would not match; convert into another --out, "
                             "or give the file these names")
    if "path" in old and (not isinstance(old["path"], str) or (f.parent / old["path"]).resolve() != f.parent.resolve()):
        raise ConverterError(f"{f}: 'path' is {short_repr(old['path'])}, not the file's own folder, so the "
                             "converted images/ would not be found through it; set 'path: .' or convert into "
                             "another --out")
    new: dict[str, Any] = {} if "path" in old else {"path": "."}
    new.update({s: f"images/{s}" for s in SPLITS if s in splits})
    _val_fallback(f, new, old)
    if "names" not in old:
        new["names"] = dict(enumerate(names))
    if "train" in new and "train" not in old and "train_defaults" not in old and 0 < n_train < SMALL_DATASET:
        new["train_defaults"] = SMALL_DATASET_DEFAULTS  # a first train split: the defaults a new file gets
    text = f.read_text(encoding="utf-8")
    for key, value in new.items():
        if old.get(key) != value:
            text = _set_top_level_key(text, key, value)
    if not _same_mapping(text, {**old, **new}):
        raise ConverterError(f"{f}: cannot set {', '.join(new)} without touching the rest of it (written in "
                             "flow style?); set them by hand, or convert into another --out")
    return text


def _set_top_level_key(text: str, key: str, value: Any) -> str:
    """``text`` (a YAML mapping) with the block of the top-level ``key`` replaced by ``key: value``
    (appended where absent); every other line, comments included, unchanged."""
    lines = text.splitlines(keepends=True)
    block = yaml.safe_dump({key: value}, sort_keys=False)
    pattern = re.compile(rf"""(['"]?){re.escape(key)}\1\s*:(\s|$)""")
    start = next((i for i, ln in enumerate(lines) if pattern.match(ln)), None)
    if start is None:
        return text + ("" if not text or text.endswith("\n") else "\n") + block
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "\t", "- ")) or lines[end].rstrip() == "-"):
        end += 1  # the value's own lines: indented, or a list at the key's indentation
    return "".join(lines[:start]) + block + "".join(lines[end:])


def _same_mapping(text: str, want: dict[str, Any]) -> bool:
    """Whether ``text`` loads as exactly ``want``, each key given once."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        keys = [k.value for k, _ in node.value] if isinstance(node, yaml.MappingNode) else []
        return len(keys) == len(set(keys)) and yaml.safe_load(text) == want
    except yaml.YAMLError:
        return False


def next_command(yaml_file: Path) -> str:
    """The train.py command to run after a conversion (yolov5n at 320 px: minutes per epoch on a CPU)."""
    return f"next: .venv/bin/python train.py --data {yaml_file} --cfg models/yolov5n.yaml --img 320"


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
