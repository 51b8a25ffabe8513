"""Hostile inputs: dataset YAMLs with path tricks, label files with 10^5 rows, non-finite losses."""
import logging
import time

import cv2
import numpy as np
import pytest
import torch

from utils.data.verify import check_pair
from utils.dataloaders import check_dataset
from utils.engine.hyp import TRAINER_DEFAULTS
from utils.engine.step import MAX_BAD_STEPS, make_stepper


def test_paths_outside_the_dataset_root_are_reported(tmp_path, caplog):
    root, outside = tmp_path / "ds", tmp_path / "elsewhere" / "images"
    (root / "images").mkdir(parents=True)
    outside.mkdir(parents=True)
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"path: {root}\ntrain: ../elsewhere/images\nval: {outside}\nnames: [a]\n"
                   "download: https://example.com/x.zip\n")
    with caplog.at_level(logging.WARNING):
        data = check_dataset(cfg)
    assert data["train"] == str(outside.resolve())
    text = caplog.text
    assert "ignoring 'download:'" in text
    assert text.count(f"outside the dataset root {root}") == 2 and "key 'train'" in text and "key 'val'" in text


def test_label_file_with_100k_rows_is_parsed_quickly(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    img = tmp_path / "images" / "big.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    rng = np.random.default_rng(0)
    rows = np.column_stack((rng.integers(0, 3, 100_000), rng.uniform(0.2, 0.8, (100_000, 2)),
                            rng.uniform(0.01, 0.2, (100_000, 2))))
    rows[1] = rows[0]  # one duplicate
    np.savetxt(tmp_path / "labels" / "big.txt", rows, fmt="%d %.6f %.6f %.6f %.6f")
    t = time.perf_counter()
    rec = check_pair(str(img), str(tmp_path / "labels" / "big.txt"), nc=3)
    assert time.perf_counter() - t < 10
    assert rec.labels.shape == (99_999, 5)


def test_non_finite_losses_skip_steps_then_stop(tmp_path, caplog):
    names = type("L", (), {"names": ("box", "obj", "cls")})()
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.BatchNorm2d(1))
    stepper = make_stepper(model, names, {**TRAINER_DEFAULTS, "loss": "ota"}, optimizer="SGD",
                           batch_size=8, epochs=1, batches_per_epoch=1, save_dir=tmp_path)
    ok = torch.tensor(1.0), torch.tensor([0.1, 0.2, 0.3])
    bad = torch.tensor(float("nan")), torch.tensor([0.1, float("inf"), 0.3])
    assert stepper.check_finite(*ok)
    with caplog.at_level(logging.WARNING):
        for _ in range(MAX_BAD_STEPS - 1):
            assert not stepper.check_finite(*bad)
    assert "non-finite loss of strategy 'ota' (components: obj); step skipped" in caplog.text
    with pytest.raises(FloatingPointError, match="10 consecutive non-finite losses"):
        stepper.check_finite(*bad)
