"""The built-in shapes dataset: deterministic bytes, sane labels, atomic first-use generation."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import yaml

from utils.dataloaders import check_dataset
from utils.data.shapes_dataset import CLASSES, ensure_shapes_dataset, make_shapes_dataset

SMALL = dict(n_train=4, n_val=2, imgsz=96)


def _digest(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = _digest(make_shapes_dataset(tmp_path / "a", seed=0, **SMALL))
    b = _digest(make_shapes_dataset(tmp_path / "b", seed=0, **SMALL))
    c = _digest(make_shapes_dataset(tmp_path / "c", seed=1, **SMALL))
    assert len(a) == 2 * (4 + 2) + 1 and a == b
    assert {k: v for k, v in a.items() if k.endswith(".png")} != {k: v for k, v in c.items() if k.endswith(".png")}


def test_labels_valid_and_varied(tmp_path):
    root = make_shapes_dataset(tmp_path / "s", n_train=30, n_val=0, imgsz=128, seed=0)
    rows = np.array([ln.split() for f in (root / "labels" / "train").glob("*.txt")
                     for ln in f.read_text().splitlines()], float)
    assert len(rows) > 60 and set(rows[:, 0].astype(int)) == set(range(len(CLASSES)))
    xyxy = np.concatenate((rows[:, 1:3] - rows[:, 3:5] / 2, rows[:, 1:3] + rows[:, 3:5] / 2), 1)
    assert xyxy.min() >= -1e-6 and xyxy.max() <= 1 + 1e-6 and (rows[:, 3:5] > 0).all()  # 6 decimals
    side = rows[:, 3:5].max(1) * 128
    assert side.min() < 10 and side.max() > 35  # small and large objects


def test_check_dataset_generates_on_first_use(tmp_path):
    f = tmp_path / "data" / "s.yaml"
    f.parent.mkdir()
    f.write_text(yaml.safe_dump({"path": "../datasets/s", "train": "images/train", "val": "images/val",
                                 "names": list(CLASSES), "generate": "shapes", "generate_args": SMALL}))
    d = check_dataset(f)
    root = tmp_path / "datasets" / "s"
    assert d["path"] == str(root) and len(list((root / "images" / "train").glob("*.png"))) == 4
    before = _digest(root)
    check_dataset(f)  # second use: nothing rewritten
    assert _digest(root) == before
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    assert ensure_shapes_dataset(root, **SMALL) == root
