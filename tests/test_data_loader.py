"""Dataset YAMLs, label cache, item/batch formats, rect batches, letterbox round trip."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from utils.boxes import scale_boxes, xywhn2xyxy
from utils.data import label_cache, verify
from utils.dataloaders import DatasetError, LoadImagesAndLabels, check_dataset, create_dataloader


def _make_split(root: Path, split: str, sizes: list[tuple[int, int]]) -> None:
    """One image per (w, h) with a red box at a known place and its label."""
    for i, (w, h) in enumerate(sizes):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        im = np.full((h, w, 3), 60, np.uint8)
        x1, y1, x2, y2 = w // 4, h // 4, w // 2, 3 * h // 4
        im[y1:y2, x1:x2] = (0, 0, 255)
        cv2.imwrite(str(root / "images" / split / f"{i:03d}.png"), im)
        xc, yc, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        (root / "labels" / split / f"{i:03d}.txt").write_text(f"{i % 2} {xc} {yc} {bw} {bh}\n")


SIZES = [(64, 48), (48, 64), (80, 40), (40, 40), (50, 70), (90, 30)]


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    _make_split(tmp_path / "ds", "train", SIZES)
    _make_split(tmp_path / "ds", "val", SIZES[:3])
    return tmp_path / "ds"


def _write_yaml(yaml_file: Path, **data) -> Path:
    yaml_file.write_text(yaml.safe_dump(data))
    return yaml_file


# ---- check_dataset ------------------------------------------------------------------------------

def test_check_dataset_resolves_relative_to_yaml(dataset_root, tmp_path, monkeypatch):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    f = _write_yaml(cfg / "d.yaml", path="../ds", train="images/train", val=["images/val"],
                    names={0: "a", 1: "b"}, nc=2)
    monkeypatch.chdir(dataset_root)  # the current directory must not matter
    d = check_dataset(f)
    assert d["train"] == str(dataset_root / "images" / "train")
    assert d["val"] == [str(dataset_root / "images" / "val")]
    assert d["names"] == ["a", "b"] and d["nc"] == 2 and d["test"] is None


def test_check_dataset_errors_name_yaml_key_path(dataset_root, tmp_path):
    f = _write_yaml(tmp_path / "d.yaml", path=str(dataset_root), train="images/train", val="images/nope",
                    names=["a", "b"])
    with pytest.raises(DatasetError) as e:
        check_dataset(f)
    assert str(f) in str(e.value) and "'val'" in str(e.value) and "images/nope" in str(e.value)
    f = _write_yaml(tmp_path / "d2.yaml", path=str(dataset_root), train="images/train", val="images/val",
                    names=["a", "b"], nc=3)
    with pytest.raises(DatasetError, match="nc=3"):
        check_dataset(f)


def test_download_key_is_ignored(dataset_root, tmp_path, caplog):
    f = _write_yaml(tmp_path / "d.yaml", path=str(dataset_root), train="images/train", val="images/val",
                    names=["a", "b"], download="https://example.com/x.zip")
    assert check_dataset(f)["nc"] == 2
    assert any("download" in r.getMessage() for r in caplog.records)


def test_txt_list_relative_to_txt_folder(dataset_root):
    lst = dataset_root / "train.txt"
    lst.write_text("./images/train/000.png\nimages/train/001.png\n")
    ds = LoadImagesAndLabels(lst, img_size=64, use_label_cache=False)
    assert ds.im_files == [str(dataset_root / "images/train/000.png"), str(dataset_root / "images/train/001.png")]


# ---- label cache --------------------------------------------------------------------------------

def test_label_cache_hit_and_rebuild(dataset_root, monkeypatch):
    calls = []
    real = verify.parse_label_file
    monkeypatch.setattr(verify, "parse_label_file", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    path = dataset_root / "images" / "train"
    LoadImagesAndLabels(path, img_size=64)
    assert len(calls) == len(SIZES) and (dataset_root / "labels" / "train.cache").is_file()
    ds = LoadImagesAndLabels(path, img_size=64)
    assert len(calls) == len(SIZES)  # cache hit: nothing parsed
    ds = LoadImagesAndLabels(path, img_size=64, nc=1)  # nc is applied after the cache
    assert len(calls) == len(SIZES) and ds.n == 3  # images with class 1 are rejected
    lb = dataset_root / "labels" / "train" / "002.txt"
    lb.write_text("1 0.5 0.5 0.25 0.25\n")
    os.utime(lb, ns=(1, 1))  # a different mtime even on coarse clocks
    ds = LoadImagesAndLabels(path, img_size=64)
    assert len(calls) == 2 * len(SIZES)  # stale cache rebuilt
    i = ds.im_files.index(str(dataset_root / "images" / "train" / "002.png"))
    np.testing.assert_allclose(ds.labels[i], [[1, 0.5, 0.5, 0.25, 0.25]])


def test_cache_is_plain_json_and_survives_garbage(dataset_root):
    path = dataset_root / "images" / "train"
    LoadImagesAndLabels(path, img_size=64)
    cache = dataset_root / "labels" / "train.cache"
    assert cache.read_text().startswith("{")
    cache.write_bytes(b"\x80garbage")
    assert LoadImagesAndLabels(path, img_size=64).n == len(SIZES)
    assert label_cache.load_cache(cache, "x") is None


# ---- items and batches --------------------------------------------------------------------------

def test_collate_format_and_dtypes(dataset_root):
    loader, ds = create_dataloader(str(dataset_root / "images" / "train"), 64, 4, 32, augment=True,
                                   workers=0, shuffle=True, seed=1)
    imgs, targets, paths, shapes = next(iter(loader))
    assert imgs.dtype == torch.uint8 and imgs.shape == (4, 3, 64, 64)
    assert targets.dtype == torch.float32 and targets.shape[1] == 6
    assert set(targets[:, 0].tolist()) <= {0, 1, 2, 3}
    assert ((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1)).all()
    assert isinstance(paths, tuple) and len(paths) == 4 and isinstance(shapes, tuple)


def test_seeded_loader_is_reproducible(dataset_root):
    def first_batch():
        loader, _ = create_dataloader(str(dataset_root / "images" / "train"), 64, 3, 32, augment=True,
                                      workers=0, shuffle=True, seed=3)
        torch.manual_seed(0)  # workers=0: augmentations use the main process' random state
        import random
        random.seed(0)
        np.random.seed(0)
        return next(iter(loader))

    a, b = first_batch(), first_batch()
    assert a[2] == b[2] and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_rect_batch_shapes_multiple_of_stride(dataset_root):
    ds = LoadImagesAndLabels(dataset_root / "images" / "train", img_size=96, batch_size=2, rect=True,
                             stride=32, pad=0.5)
    assert (ds.batch_shapes % 32 == 0).all() and len(ds.batch_shapes) == 3
    ar = ds.shapes[:, 1] / ds.shapes[:, 0]
    assert (np.diff(ar) >= 0).all()  # sorted by aspect ratio
    for i in range(len(ds)):
        img, _, _, _ = ds[i]
        assert tuple(img.shape[1:]) == tuple(ds.batch_shapes[ds.batch[i]])


@pytest.mark.parametrize("rect", [False, True])
def test_letterbox_scale_boxes_round_trip(dataset_root, rect):
    ds = LoadImagesAndLabels(dataset_root / "images" / "val", img_size=96, batch_size=2, rect=rect)
    for i in range(len(ds)):
        img, labels, path, shapes = ds[i]
        h, w = img.shape[1:]
        boxes = xywhn2xyxy(labels[:, 2:].double(), w, h)
        back = scale_boxes(img.shape[1:], boxes.clone(), shapes[0], shapes[1])
        h0, w0 = shapes[0]
        orig = xywhn2xyxy(torch.tensor(ds.labels[i][:, 1:], dtype=torch.float64), w0, h0)
        torch.testing.assert_close(back, orig, atol=0.02 * max(h0, w0), rtol=0)
        # the red box is where the label says in the letterboxed image too
        red = (img[0] > 200) & (img[2] < 50)
        ys, xs = torch.nonzero(red, as_tuple=True)
        x1, y1, x2, y2 = boxes[0].tolist()
        assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
        assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5


def test_single_cls_and_mosaic_switch(dataset_root):
    ds = LoadImagesAndLabels(dataset_root / "images" / "train", img_size=64, augment=True, single_cls=True)
    assert all((lb[:, 0] == 0).all() for lb in ds.labels)
    assert ds.mosaic
    ds.mosaic = False
    assert not ds.mosaic and ds[0][3] is not None  # letterboxed items carry shapes
    ds.indices = np.zeros(len(ds), dtype=int)
    assert ds[3][2] == ds.im_files[0]


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_image_cache_gives_same_items(dataset_root, mode):
    path = dataset_root / "images" / "val"
    plain = LoadImagesAndLabels(path, img_size=64)
    cached = LoadImagesAndLabels(path, img_size=64, cache_images=mode)
    for i in range(len(plain)):
        assert torch.equal(plain[i][0], cached[i][0])
    if mode == "disk":
        assert all(Path(f).is_file() for f in cached.npy_files)
