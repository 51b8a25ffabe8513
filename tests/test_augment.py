"""Augmentations: letterbox semantics and box/pixel alignment after mosaic + random_perspective."""
from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.data.augmentations import augment_hsv, box_candidates, letterbox, mixup, random_perspective
from utils.boxes import xywhn2xyxy
from utils.dataloaders import LoadImagesAndLabels

COLOURS_BGR = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0)]


@pytest.mark.parametrize("shape, new, auto, fill, up, out, ratio, pad", [
    ((480, 640), 320, False, False, True, (320, 320), (0.5, 0.5), (0.0, 40.0)),
    ((480, 640), 320, True, False, True, (256, 320), (0.5, 0.5), (0.0, 8.0)),
    ((480, 640), (320, 320), False, True, True, (320, 320), (0.5, 320 / 480), (0.0, 0.0)),
    ((100, 50), 320, False, False, False, (320, 320), (1.0, 1.0), (135.0, 110.0)),
    ((101, 50), (64, 64), False, False, True, (64, 64), (64 / 101, 64 / 101), (16.0, 0.0)),
])
def test_letterbox(shape, new, auto, fill, up, out, ratio, pad):
    im = np.zeros((*shape, 3), np.uint8)
    res, r, p = letterbox(im, new, auto=auto, scaleFill=fill, scaleup=up, stride=32)
    assert res.shape[:2] == out
    assert r == pytest.approx(ratio) and p == pytest.approx(pad)
    assert (res[0, 0] == 114).all() or pad == (0.0, 0.0)


def test_box_candidates_rules():
    before = np.array([[0, 0, 10, 10]] * 4, float).T
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 10, 0.05]], float).T
    assert box_candidates(before, after).tolist() == [True, False, False, False]


def test_hsv_zero_gain_is_identity_and_mixup_keeps_labels():
    im = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    ref = im.copy()
    augment_hsv(im, 0, 0, 0)
    assert np.array_equal(im, ref)
    augment_hsv(im, 0.5, 0.5, 0.5)
    assert im.shape == ref.shape and im.dtype == np.uint8
    out, lb = mixup(im, np.ones((2, 5)), ref, np.zeros((3, 5)))
    assert out.shape == im.shape and len(lb) == 5


def test_random_perspective_identity_keeps_boxes():
    im = np.full((64, 64, 3), 7, np.uint8)
    t = np.array([[1, 10, 12, 30, 40]], np.float32)
    out, t2 = random_perspective(im, t, degrees=0, translate=0, scale=0, shear=0)
    assert np.array_equal(out, im) and np.allclose(t2, t)


@pytest.fixture
def colour_dataset(tmp_path: Path) -> Path:
    """6 images of different sizes, each with one square of its class colour on grey 60."""
    rng = np.random.default_rng(0)
    for i, colour in enumerate(COLOURS_BGR):
        h, w = int(rng.integers(60, 100)), int(rng.integers(60, 100))
        im = np.full((h, w, 3), 60, np.uint8)
        s = int(rng.integers(16, 30))
        x1, y1 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        im[y1:y1 + s, x1:x1 + s] = colour
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), im)
        row = f"{i} {(x1 + s / 2) / w} {(y1 + s / 2) / h} {s / w} {s / h}\n"
        (tmp_path / "labels" / f"{i}.txt").write_text(row)
    return tmp_path / "images"


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_boxes_follow_pixels_after_augmentation(colour_dataset, mosaic):
    hyp = dict(hsv_h=0, hsv_s=0, hsv_v=0, degrees=15, translate=0.1, scale=0.4, shear=5,
               perspective=0.0005, flipud=0.5, fliplr=0.5, mosaic=mosaic)
    ds = LoadImagesAndLabels(colour_dataset, img_size=96, augment=True, hyp=hyp, use_label_cache=False)
    random.seed(0)
    np.random.seed(0)
    n_checked = 0
    for it in range(24):
        img, labels, _, _ = ds[it % len(ds)]
        rgb = img.permute(1, 2, 0).numpy().astype(int)
        boxes = xywhn2xyxy(labels[:, 2:].numpy(), img.shape[2], img.shape[1])
        for cls in labels[:, 1].unique().int().tolist():
            b, g, r = COLOURS_BGR[cls]
            hit = (np.abs(rgb - np.array([r, g, b])) < 40).all(-1)
            ys, xs = np.nonzero(hit)
            mine = boxes[labels[:, 1].numpy() == cls]
            inside = np.zeros(len(xs), bool)
            for x1, y1, x2, y2 in mine:
                inside |= (xs >= x1 - 2) & (xs < x2 + 2) & (ys >= y1 - 2) & (ys < y2 + 2)
                area = (x2 - x1) * (y2 - y1)
                in_box = hit[int(np.ceil(y1)):int(y2), int(np.ceil(x1)):int(x2)].sum()
                # a rotated square fills >= 1 / 1.37 of its box; a corner cut by the border less
                at_border = min(x1, y1) < 1 or x2 > img.shape[2] - 1 or y2 > img.shape[1] - 1
                if min(x2 - x1, y2 - y1) >= 6:  # thinner slivers are mostly blended edge pixels
                    assert in_box >= (0.25 if at_border else 0.5) * area, (it, cls, in_box, area)
                    n_checked += 1
            # slivers cut by the image border keep < 10 % of their box and are dropped (YOLOv5's
            # box_candidates), so pixels outside every box may only lie next to the border
            h, w = hit.shape
            border_dist = np.minimum.reduce([xs, ys, w - 1 - xs, h - 1 - ys])[~inside]
            assert (border_dist <= 8).all(), f"iteration {it}: class {cls} pixels outside its boxes"
    assert n_checked >= 20


def test_boxes_dropped_when_object_leaves_image(colour_dataset):
    """Pixels of a colour whose box was removed must be (almost) absent: no unlabelled objects."""
    hyp = dict(hsv_h=0, hsv_s=0, hsv_v=0, degrees=0, translate=0.3, scale=0.5, shear=0, fliplr=0, mosaic=1.0)
    ds = LoadImagesAndLabels(colour_dataset, img_size=96, augment=True, hyp=hyp, use_label_cache=False)
    random.seed(1)
    np.random.seed(1)
    for it in range(24):
        img, labels, _, _ = ds[it % len(ds)]
        rgb = img.permute(1, 2, 0).numpy().astype(int)
        present = set(labels[:, 1].int().tolist())
        for cls, (b, g, r) in enumerate(COLOURS_BGR):
            if cls not in present:
                hit = (np.abs(rgb - np.array([r, g, b])) < 40).all(-1).sum()
                assert hit <= 0.1 * 30 * 30 * 2.25, (it, cls, hit)  # < 10 % of the largest square
    assert isinstance(img, torch.Tensor)
