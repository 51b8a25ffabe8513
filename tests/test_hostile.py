"""Hostile inputs: dataset YAMLs with path tricks, label files with 10^5 rows, non-finite losses, hyp
values out of range, read-only datasets, checkpoint bombs and a full disk, loader order on resume."""
import errno
import logging
import shutil
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.data import label_cache, verify
from utils.data.loader import set_epoch
from utils.data.verify import check_pair
from utils.dataloaders import LoadImagesAndLabels, check_dataset, create_dataloader
from utils.hyp import HYP_DIR, TRAINER_DEFAULTS, HypError, find_hyp, load_hyp, validate_hyp
from utils.engine.step import MAX_BAD_STEPS, make_stepper
from utils.io import checkpoint as ckpt_io
from utils.io.checkpoint import (FORMAT_TAG, CheckpointError, NonFiniteCheckpoint, load_checkpoint, read_checkpoint,
                                 save_checkpoint)
from utils.io.sources import LoadImages


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


# ---- hyp files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("hyp, message", [
    ({"lr0": float("inf")}, "hyp key 'lr0' must be a finite number, got inf"),
    ({"weight_decay": -1e-4}, "hyp key 'weight_decay' must be in [0, inf), got -0.0001"),
    ({"fliplr": 1.5}, "hyp key 'fliplr' must be in [0, 1], got 1.5"),
    ({"loss": "ota", "ota_iou_weight": float("nan")}, "hyp key 'ota_iou_weight' must be a finite number, got nan"),
    ({"loss": "freeanchor", "fa_bag_size": 0}, "hyp key 'fa_bag_size' must be in (0, inf), got 0"),
    ({"loss": "gfl", "atss_topk": 0}, "hyp key 'atss_topk' must be in (0, inf), got 0"),
])
def test_hyp_values_out_of_range_name_key_and_file(hyp, message):
    with pytest.raises(HypError) as e:
        validate_hyp(hyp, "my.yaml")
    assert str(e.value) == f"my.yaml: {message}"


def test_hyp_edges_are_accepted():
    h = validate_hyp({"lr0": 0.0, "lrf": 0.0, "momentum": 0.0, "fliplr": 1.0, "mosaic": 0.0, "nbs": 1}, "x")
    assert (h["lr0"], h["momentum"], h["fliplr"], h["nbs"]) == (0.0, 0.0, 1.0, 1)


def test_empty_hyp_file_warns(tmp_path, caplog):
    f = tmp_path / "hyp.empty.yaml"
    f.write_text("# nothing here\n")
    with caplog.at_level(logging.WARNING):
        hyp = load_hyp(f)
    assert hyp["lr0"] == 0.01 and f"hyp file {f} is empty" in caplog.text


def test_hyp_lookup_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_hyp("hyp.gfl.yaml") == HYP_DIR / "hyp.gfl.yaml"  # bare name: the bundled file
    assert find_hyp("hyp/hyp.gfl.yaml") == HYP_DIR / "hyp.gfl.yaml"  # relative to the project root
    with pytest.raises(HypError, match="only a bare file name is looked up"):
        find_hyp(tmp_path / "typo" / "hyp.gfl.yaml")


# ---- label cache on a read-only dataset ------------------------------------------------------------

def test_label_cache_on_read_only_dataset(tiny_data, tmp_path, monkeypatch, caplog):
    shutil.copytree(tiny_data.parent / "images" / "val", tmp_path / "ds" / "images" / "val")
    shutil.copytree(tiny_data.parent / "labels" / "val", tmp_path / "ds" / "labels" / "val")
    tiny_data = tmp_path / "ds" / "tiny.yaml"  # a private copy: no cache file yet
    images = tiny_data.parent / "images" / "val"
    home_cache = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home_cache))
    read_only = OSError(errno.EROFS, "Read-only file system")
    real_write, real_unlink = Path.write_text, Path.unlink

    def write_text(self, *a, **k):
        if str(self).startswith(str(tiny_data.parent)):
            raise read_only
        return real_write(self, *a, **k)

    def unlink(self, *a, **k):  # on EROFS the clean-up fails too
        if str(self).startswith(str(tiny_data.parent)):
            raise read_only
        return real_unlink(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(Path, "unlink", unlink)
    with caplog.at_level(logging.INFO):
        ds = LoadImagesAndLabels(images, img_size=64)
    assert ds.n == len(list(images.iterdir()))
    assert "is not writeable: [Errno 30] Read-only file system" in caplog.text
    fallback = label_cache.user_cache_path_for(ds.label_files)
    assert fallback.parent == home_cache / "yolo-lab" / "labels" and fallback.is_file()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        LoadImagesAndLabels(images, img_size=64)
    assert f"Using label cache {fallback}" in caplog.text  # the second run reads the fallback

    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny_data.parent / "also-read-only"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert LoadImagesAndLabels(images, img_size=64, nc=5).n == ds.n  # neither writable: warnings only
    assert caplog.text.count("is not writeable") == 2


# ---- checkpoints ----------------------------------------------------------------------------------

def _tiny_ckpt(value: float = 1.0) -> dict:
    return {"format": FORMAT_TAG, "model": {"w": torch.full((3,), value)}, "optimizer": {"m": [torch.zeros(2)]}}


def test_non_finite_checkpoint_is_never_written(tmp_path):
    f = save_checkpoint(_tiny_ckpt(), tmp_path / "last.pt")
    bad = _tiny_ckpt()
    bad["model"]["w"][1] = float("nan")
    bad["optimizer"]["m"][0][0] = float("inf")
    with pytest.raises(NonFiniteCheckpoint, match=r"2 tensor\(s\) hold NaN or inf \(first: model/w, optimizer/m\[0\]\)"):
        save_checkpoint(bad, f)
    assert torch.load(f, weights_only=True)["model"]["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_disk_full_while_saving_keeps_the_previous_file(tmp_path, monkeypatch):
    f = save_checkpoint(_tiny_ckpt(1.0), tmp_path / "last.pt")

    def full_disk(obj, fh):
        fh.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ckpt_io.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint {f} .*previous file") as e:
        save_checkpoint(_tiny_ckpt(2.0), f)
    assert "inline_container" not in str(e.value)  # the user's words, not torch's C++ assertion
    monkeypatch.undo()
    assert torch.load(f, weights_only=True)["model"]["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_deflated_tensor_bomb_is_refused_before_inflating(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"format": FORMAT_TAG, "model": {"w": torch.zeros(16 * 2 ** 20)}}, plain)  # 64 MiB of zeros
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    plain.unlink()
    assert bomb.stat().st_size < 1_000_000
    for load in (read_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError, match=r"refusing to load .*data/0 declares 67108864 bytes stored in \d+ "
                                                  r"\(a decompression bomb\?\)"):
            load(bomb)


# ---- data loading order and augmentations -----------------------------------------------------------

def _epoch_batches(loader, epoch):
    set_epoch(loader, epoch)
    return [(paths, imgs, targets) for imgs, targets, paths, _ in loader]


def test_epoch_batches_depend_on_seed_and_epoch_only(tiny_data):
    images = str(tiny_data.parent / "images" / "train")
    hyp = {**load_hyp("hyp.scratch.yaml"), "degrees": 10.0}
    loader0, _ = create_dataloader(images, 64, 4, 32, hyp=hyp, augment=True, workers=0, shuffle=True, seed=5)
    history = [_epoch_batches(loader0, e) for e in range(3)]
    loader2, _ = create_dataloader(images, 64, 4, 32, hyp=hyp, augment=True, workers=2, shuffle=True, seed=5)
    direct = _epoch_batches(loader2, 2)  # epoch 2 straight away, in worker processes
    for (pa, ia, ta), (pb, ib, tb) in zip(history[2], direct, strict=True):
        assert pa == pb and torch.equal(ia, ib) and torch.equal(ta, tb)
    assert [p for p, _, _ in history[0]] != [p for p, _, _ in history[1]]  # epochs are shuffled differently


def test_load_images_checks_pixels_before_decoding(tmp_path, monkeypatch, caplog):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((30, 40, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b.pfm"), np.zeros((20, 20, 3), np.float32))  # PIL cannot read its header
    writer = cv2.VideoWriter(str(tmp_path / "c.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (48, 32))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    for _ in range(2):
        writer.write(np.zeros((32, 48, 3), np.uint8))
    writer.release()
    monkeypatch.setattr(verify, "MAX_IMAGE_PIXELS", 1200)  # a.png is 1200 px; the video frames 1536
    with caplog.at_level(logging.WARNING):
        items = list(LoadImages(tmp_path, img_size=64, stride=32))
    assert [Path(i[0]).name for i in items] == ["a.png", "b.pfm"]
    dataset = LoadImages(tmp_path, img_size=64, stride=32)
    list(dataset)
    assert dataset.skipped == [(str(tmp_path / "c.mp4"), "48x32 = 1536 pixels exceeds the limit of 1200 "
                                "(decompression bomb?; raise it with --max-pixels)")]
    monkeypatch.setattr(verify, "MAX_IMAGE_PIXELS", 399)
    assert verify.header_problem(str(tmp_path / "b.pfm")).startswith("20x20 = 400 pixels exceeds")
