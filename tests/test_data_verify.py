"""Bad input of every kind is skipped / dropped / clipped with one warning naming the file."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from utils.data import verify
from utils.dataloaders import DatasetError, LoadImagesAndLabels


def _img(path: Path, w: int = 32, h: int = 24, ext: str = ".png") -> Path:
    path = path.with_suffix(ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = np.full((h, w, 3), 90, np.uint8)
    cv2.rectangle(im, (4, 4), (w // 2, h // 2), (0, 0, 255), -1)
    cv2.imwrite(str(path), im)
    return path


def _pair(root: Path, name: str, rows: str | None, **kw) -> tuple[Path, Path]:
    im = _img(root / "images" / "train" / name, **kw)
    lb = root / "labels" / "train" / f"{name}.txt"
    lb.parent.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        lb.write_text(rows)
    return im, lb


def _good_dataset(root: Path, n: int = 2) -> None:
    for i in range(n):
        _pair(root, f"good{i}", "0 0.3 0.3 0.4 0.4\n")


# ---- images -------------------------------------------------------------------------------------

def _corrupt_image_case(tmp_path: Path, kind: str) -> Path:
    d = tmp_path / "images" / "train"
    d.mkdir(parents=True, exist_ok=True)
    if kind == "zero_byte":
        f = d / "zero.jpg"
        f.write_bytes(b"")
    elif kind == "not_image":
        f = d / "text.jpg"
        f.write_text("this is not an image\n" * 20)
    elif kind == "truncated_jpeg":
        f = _img(d / "trunc", 64, 64, ext=".jpg")
        f.write_bytes(f.read_bytes()[:300])
    elif kind == "truncated_png":
        f = _img(d / "truncp", 64, 64)
        f.write_bytes(f.read_bytes()[:-30])
    elif kind == "too_small":
        f = _img(d / "tiny", 8, 8)
    else:
        raise ValueError(kind)
    return f


@pytest.mark.parametrize("kind", ["zero_byte", "not_image", "truncated_jpeg", "truncated_png", "too_small"])
def test_corrupt_image_skipped_with_warning(tmp_path, caplog, kind):
    _good_dataset(tmp_path)
    bad = _corrupt_image_case(tmp_path, kind)
    with caplog.at_level(logging.WARNING):
        ds = LoadImagesAndLabels(tmp_path / "images" / "train", img_size=64, use_label_cache=False)
    assert ds.n == 2 and str(bad) not in ds.im_files
    lines = [r.getMessage() for r in caplog.records if str(bad) in r.getMessage()]
    assert len(lines) == 1 and "corrupt" in lines[0]


def test_decompression_bomb_is_corrupt(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "MAX_IMAGE_PIXELS", 50 * 50)
    f = _img(tmp_path / "big", 60, 60)
    shape, why = verify.verify_image(str(f))
    assert shape is None and why == "60x60 = 3600 pixels exceeds the limit of 2500 (decompression bomb?; raise it with --max-pixels)"
    assert verify.verify_image(str(_img(tmp_path / "ok", 40, 40)))[0] == (40, 40)


def test_exif_rotation_swaps_shape(tmp_path):
    f = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: cv2.imread returns (w, h) swapped
    Image.new("RGB", (40, 20), (10, 20, 30)).save(f, exif=exif)
    assert verify.verify_image(str(f))[0] == (20, 40)
    assert cv2.imread(str(f)).shape[:2] == (40, 20)


# ---- labels: whole image skipped ----------------------------------------------------------------

@pytest.mark.parametrize("rows, why", [
    ("0 0.5 0.5 0.2\n", "columns"),
    ("0 0.5 0.5 0.2 0.2 7\n", "columns"),
    ("0 0.5 abc 0.2 0.2\n", "non-numeric"),
    ("-1 0.5 0.5 0.2 0.2\n", "invalid class"),
    ("1.5 0.5 0.5 0.2 0.2\n", "invalid class"),
    ("3 0.5 0.5 0.2 0.2\n", "nc=3"),
])
def test_malformed_label_skips_image(tmp_path, caplog, rows, why):
    _good_dataset(tmp_path)
    im, lb = _pair(tmp_path, "bad", "0 0.5 0.5 0.1 0.1\n" + rows)
    with caplog.at_level(logging.WARNING):
        ds = LoadImagesAndLabels(tmp_path / "images" / "train", img_size=64, nc=3, use_label_cache=False)
    assert str(im) not in ds.im_files and ds.n == 2
    lines = [r.getMessage() for r in caplog.records if str(lb) in r.getMessage()]
    assert len(lines) == 1 and why in lines[0]


# ---- labels: rows dropped or clipped, image kept ------------------------------------------------

@pytest.mark.parametrize("rows, n_left, dropped, clipped, warn", [
    ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n", 1, 1, 0, "duplicate"),
    ("0 0.5 0.5 0.0 0.2\n1 0.5 0.5 0.2 0.2\n", 1, 1, 0, "zero-area"),
    ("0 1.8 0.5 0.2 0.2\n1 0.5 0.5 1.6 0.2\n2 0.5 0.5 0.2 0.2\n", 1, 2, 0, "absurd"),
    ("0 0.05 0.5 0.2 0.2\n", 1, 0, 1, "clipped"),
    ("0 0.1 0.5 0.205 0.2\n", 1, 0, 0, None),  # 0.0025 outside: within BOX_TOL, clipped silently
    ("0 1.2 0.5 0.2 0.2\n", 0, 1, 0, "zero-area"),  # entirely right of the image
])
def test_bad_rows_dropped_or_clipped(tmp_path, caplog, rows, n_left, dropped, clipped, warn):
    im, lb = _pair(tmp_path, "img", rows)
    with caplog.at_level(logging.WARNING):
        rec = verify.check_pair(str(im), str(lb), nc=3)
    assert rec.status != "corrupt"
    assert len(rec.labels) == n_left and rec.dropped == dropped and rec.clipped == clipped
    if len(rec.labels):
        xyxy = np.concatenate((rec.labels[:, 1:3] - rec.labels[:, 3:5] / 2,
                               rec.labels[:, 1:3] + rec.labels[:, 3:5] / 2), 1)
        assert xyxy.min() >= -1e-6 and xyxy.max() <= 1 + 1e-6
    if warn:
        assert rec.message.startswith(str(lb)) and warn in rec.message
    else:
        assert rec.message == ""


def test_missing_and_empty_label_are_backgrounds(tmp_path, caplog):
    _pair(tmp_path, "a", "0 0.5 0.5 0.2 0.2\n")
    _pair(tmp_path, "missing", None)
    _pair(tmp_path, "empty", "")
    _pair(tmp_path, "blank", "\n  \n")
    with caplog.at_level(logging.INFO):
        ds = LoadImagesAndLabels(tmp_path / "images" / "train", img_size=64, use_label_cache=False)
    assert ds.n == 4
    assert sorted(len(lb) for lb in ds.labels) == [0, 0, 0, 1]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("4 images, 3 backgrounds, 0 corrupt, 0 rows dropped" in r.getMessage() for r in caplog.records)


def test_summary_counts(tmp_path, caplog):
    _good_dataset(tmp_path, 3)
    _pair(tmp_path, "dup", "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0 0.1\n")
    _corrupt_image_case(tmp_path, "zero_byte")
    with caplog.at_level(logging.INFO):
        LoadImagesAndLabels(tmp_path / "images" / "train", img_size=64, use_label_cache=False, prefix="train: ")
    assert any(r.getMessage() == "train: 4 images, 0 backgrounds, 1 corrupt, 2 rows dropped, 0 clipped"
               for r in caplog.records)


def test_no_usable_images_is_an_error(tmp_path):
    _corrupt_image_case(tmp_path, "zero_byte")
    _corrupt_image_case(tmp_path, "not_image")
    with pytest.raises(DatasetError, match="no usable images"):
        LoadImagesAndLabels(tmp_path / "images" / "train", img_size=64, use_label_cache=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        LoadImagesAndLabels(tmp_path / "empty", img_size=64, use_label_cache=False)


def test_img2label_paths_replaces_last_images_folder():
    p = "/d/images/x/images/train/a.b.jpg"
    assert verify.img2label_paths([p]) == ["/d/images/x/labels/train/a.b.txt"]
