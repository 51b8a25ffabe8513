"""LabelImg folders and COCO JSON without given splits: hash split, edge cases, bad input, and the
data.yaml they write loading through the project's own dataset code."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from data.converters import coco2yolo, voc2yolo
from data.converters.common import hash_splits
from utils.dataloaders import check_dataset, create_dataloader


def _xml(objs: list[tuple[str, tuple[int, int, int, int]]], size: tuple[int, int] | None) -> str:
    s = "<annotation><filename>ignored.jpg</filename>"
    if size:
        s += f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    for name, (x1, y1, x2, y2) in objs:
        s += (f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
              f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return s + "</annotation>"


def _image(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


@pytest.fixture()
def labelimg(tmp_path: Path) -> Path:
    """XMLs beside their images: no <size>, clipping, unknown class, background, orphan XML."""
    src = tmp_path / "labelimg"
    _image(src / "a.jpg", 100, 50)
    (src / "a.xml").write_text(_xml([("dog", (1, 1, 51, 26))], size=None))  # <size> read from the image
    _image(src / "b.png", 80, 40)
    (src / "b.xml").write_text(_xml([("cat", (61, 11, 121, 31)), ("cat", (90, 5, 99, 9)), ("bird", (1, 1, 9, 9))],
                                    size=(80, 40)))
    _image(src / "c.jpg", 64, 64)  # no XML: background
    (src / "orphan.xml").write_text(_xml([("dog", (1, 1, 5, 5))], size=(10, 10)))
    return src


def _labels(out: Path) -> dict[str, list[str]]:
    """{image file name: label rows} over every split, checking each label sits in its image's split."""
    res = {}
    for lb in (out / "labels").rglob("*.txt"):
        im = next((out / "images" / lb.parent.name).glob(lb.stem + ".*"))
        res[im.name] = lb.read_text().splitlines()
    return res


def test_hash_split_shares_and_seed():
    names = [f"img_{i:05d}.jpg" for i in range(4000)]
    splits = hash_splits(names, 0.2, 0.1)
    assert (splits.count("val"), splits.count("test")) == (800, 400)  # exact: round(fraction * n)
    assert splits == hash_splits(names, 0.2, 0.1, seed=0)
    assert splits[::-1] == hash_splits(names[::-1], 0.2, 0.1)  # the order files are listed in changes nothing
    other = hash_splits(names, 0.2, 0.1, seed=1)
    assert 0.2 < np.mean([a != b for a, b in zip(splits, other)]) < 0.6
    # growing val only moves train images into val, never val out of it
    grown = hash_splits(names, 0.3, 0.1)
    assert all(g == "val" for s, g in zip(splits, grown) if s == "val")


def test_labelimg_beside_images(labelimg: Path, tmp_path: Path):
    out = tmp_path / "out"
    st = voc2yolo.convert_voc(labelimg, out, names=["cat", "dog"], val_fraction=0.5)
    assert (st.images, st.backgrounds, st.images_missing) == (3, 1, 1)
    assert (st.boxes_read, st.boxes_written, st.boxes_clipped, st.boxes_dropped) == (4, 2, 1, 2)
    labels = _labels(out)
    assert labels["a.jpg"] == ["1 0.250000 0.250000 0.500000 0.500000"]  # (0, 0)-(50, 25) of 100x50
    assert labels["b.png"] == ["0 0.875000 0.500000 0.250000 0.500000"]  # (60, 10)-(80, 30): clipped at x=80
    assert labels["c.jpg"] == []
    for f, split in zip(("a.jpg", "b.png", "c.jpg"), hash_splits(["a.jpg", "b.png", "c.jpg"], 0.5, 0.0)):
        assert (out / "images" / split / f).is_file()
    assert not any(out.parent.glob(".out.tmp-*"))


def test_labelimg_split_when_files_are_added(labelimg: Path, tmp_path: Path):
    """Exact counts both times; the old images that stay in val are those first in the hash order (only
    images next to the cut move: tests/test_hostile_round3_input.py bounds how many)."""
    from data.converters.common import _unit_hash
    first = voc2yolo.convert_voc(labelimg, tmp_path / "out1", val_fraction=0.5)
    before = {p.name: p.parent.name for p in (tmp_path / "out1" / "images").rglob("*.*")}
    for i in range(12):
        _image(labelimg / f"new_{i}.jpg", 32, 32)
    second = voc2yolo.convert_voc(labelimg, tmp_path / "out2", val_fraction=0.5)
    after = {p.name: p.parent.name for p in (tmp_path / "out2" / "images").rglob("*.*")}
    assert first.images == 3 and second.images == 15
    assert (first.per_split, second.per_split) == ({"train": 1, "val": 2}, {"train": 7, "val": 8})
    ranked = sorted(before, key=lambda n: _unit_hash(n, 0))
    still_val = [n for n in ranked if after[n] == "val"]
    assert still_val == ranked[:len(still_val)]


def test_annotations_images_layout_loads_for_training(tmp_path: Path):
    src = tmp_path / "ds"
    for i in range(6):
        _image(src / "images" / f"im{i}.jpg", 64, 48)
        (src / "annotations" / f"im{i}.xml").parent.mkdir(parents=True, exist_ok=True)
        (src / "annotations" / f"im{i}.xml").write_text(_xml([("box", (9, 9, 41, 33))], size=(64, 48)))
    out = tmp_path / "yolo"
    st = voc2yolo.convert_voc(src, out, val_fraction=0.4)
    assert st.images == 6 and st.boxes_written == 6 and sum(st.per_split.values()) == 6
    d = check_dataset(out / "data.yaml")
    assert d["names"] == ["box"] and d["test"] is None
    _, ds = create_dataloader(d["train"], 64, 2, 32, workers=0, nc=1)
    assert len(ds) == st.per_split["train"]
    np.testing.assert_allclose(ds.labels[0], [[0, 0.375, 0.4166667, 0.5, 0.5]], atol=1e-6)


def test_voc_without_imagesets_and_without_val(tmp_path: Path, caplog):
    """Annotations/ + JPEGImages/ without ImageSets; a single image lands in train, so val reads train."""
    src = tmp_path / "voc"
    _image(src / "JPEGImages" / "x.jpg", 40, 40)
    (src / "Annotations").mkdir()
    (src / "Annotations" / "x.xml").write_text(_xml([("a", (1, 1, 20, 20))], size=(40, 40)))
    voc2yolo.convert_voc(src, tmp_path / "out", val_fraction=0.0)
    y = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert y["train"] == y["val"] == "images/train" and "no image fell into val" in caplog.text
    assert check_dataset(tmp_path / "out" / "data.yaml")["val"].endswith("images/train")


def _run(main, argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err.strip()


def test_converter_bad_input(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = _run(voc2yolo.main, ["--source", str(tmp_path / "empty"), "--out", str(tmp_path / "o1")], capsys)
    assert rc == 1 and err.count("\n") == 0 and str(tmp_path / "empty") in err and "no images or .xml" in err

    bad = tmp_path / "bad"
    _image(bad / "a.jpg", 10, 10)
    (bad / "a.xml").write_text("<annotation><object>")
    rc, err = _run(voc2yolo.main, ["--source", str(bad), "--out", str(tmp_path / "o2")], capsys)
    assert rc == 1 and err.count("\n") == 0 and str(bad / "a.xml") in err and "not valid XML" in err
    assert not (tmp_path / "o2").exists() and not list(tmp_path.glob(".o2.tmp-*"))

    rc, err = _run(voc2yolo.main, ["--source", str(bad), "--out", str(tmp_path / "o3"), "--val-fraction", "1"],
                   capsys)
    assert rc == 1 and err == "error: --val-fraction must be in [0, 1), got 1.0"

    jf = tmp_path / "no_images.json"
    jf.write_text(json.dumps({"annotations": [], "categories": []}))
    args = ["--json", str(jf), "--images", str(bad), "--out", str(tmp_path / "o4")]
    rc, err = _run(coco2yolo.main, args, capsys)
    assert rc == 1 and err.count("\n") == 0 and str(jf) in err and "no 'images' list" in err
    jf.write_text("{not json")
    rc, err = _run(coco2yolo.main, args, capsys)
    assert rc == 1 and err.count("\n") == 0 and str(jf) in err and "not valid JSON" in err
    assert not (tmp_path / "o4").exists()


def test_coco_hash_split_polygons_and_loading(tmp_path: Path):
    imgs = tmp_path / "imgs"
    for i in range(1, 9):
        _image(imgs / f"{i}.jpg", 80, 40)
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 80, "height": 40} for i in range(1, 8)]
        + [{"id": 8, "file_name": "8.jpg"}],  # no width/height: read from the file
        "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [60, 20, 40, 40], "iscrowd": 0},  # clipped
            {"id": 2, "image_id": 1, "category_id": 3, "segmentation": [[10, 10, 30, 12, 20, 30]], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 8, 8], "iscrowd": 1},
            {"id": 4, "image_id": 3, "category_id": 5, "bbox": [0, 0, 8, 8], "iscrowd": 0},  # unknown id
            {"id": 5, "image_id": 4, "category_id": 3, "bbox": [100, 0, 8, 8], "iscrowd": 0},  # outside
            {"id": 6, "image_id": 8, "category_id": 7, "bbox": [0, 0, 40, 20]},
        ],
    }
    jf = tmp_path / "instances.json"
    jf.write_text(json.dumps(data))
    st, names = coco2yolo.convert_coco(jf, imgs, tmp_path / "out", val_fraction=0.5)
    assert names == ["a", "b"]
    assert (st.images, st.backgrounds, st.boxes_written, st.boxes_from_polygon) == (8, 6, 3, 1)
    assert (st.crowd_skipped, st.boxes_clipped, st.boxes_dropped) == (1, 1, 2)
    labels = _labels(tmp_path / "out")
    assert labels["1.jpg"] == ["1 0.875000 0.750000 0.250000 0.500000",   # (60, 20)-(80, 40)
                               "0 0.250000 0.500000 0.250000 0.500000"]   # polygon hull (10, 10)-(30, 30)
    assert labels["8.jpg"] == ["1 0.250000 0.250000 0.500000 0.500000"] and labels["2.jpg"] == []
    assert st.per_split == {"train": 4, "val": 4}
    splits = hash_splits([f"{i}.jpg" for i in range(1, 9)], 0.5, 0.0)
    assert all((tmp_path / "out" / "images" / s / f"{i}.jpg").is_file() for i, s in enumerate(splits, 1))
    d = check_dataset(tmp_path / "out" / "data.yaml")
    assert d["nc"] == 2
    loader, ds = create_dataloader(d["val"], 64, 4, 32, workers=0, nc=2)
    assert len(ds) == st.per_split["val"] and next(iter(loader))[0].shape[1:] == (3, 64, 64)


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        coco2yolo.main(["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "(default: 0.2)" in text and "(default: 0.0)" in text
    assert "default: None" not in text and "default: False" not in text


def test_converter_ends_with_the_next_command_and_small_data_defaults(tmp_path: Path, capsys):
    import argparse

    from data.converters.common import SMALL_DATASET_DEFAULTS
    from utils.hyp import load_hyp
    from utils.engine.config import resolve_defaults

    src = tmp_path / "labelimg"
    for i in range(6):
        _image(src / f"im{i}.jpg", 64, 48)
        (src / f"im{i}.xml").write_text(_xml([("box", (9, 9, 41, 33))], size=(64, 48)))
    out = tmp_path / "mine"
    assert voc2yolo.main(["--source", str(src), "--out", str(out), "--val-fraction", "0.4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"next: .venv/bin/python train.py --data {out / 'data.yaml'} --cfg models/yolov5n.yaml --img 320"
    text = (out / "data.yaml").read_text()
    assert text.startswith("# train_defaults: settings that learn from scratch on a small dataset (")
    assert yaml.safe_load(text)["train_defaults"] == SMALL_DATASET_DEFAULTS
    opt = argparse.Namespace(epochs=None, batch_size=None, imgsz=320, optimizer=None)
    values, hyp = resolve_defaults(vars(opt), check_dataset(out / "data.yaml"), load_hyp("hyp/hyp.scratch.yaml"))
    assert (values["optimizer"], values["batch_size"], values["epochs"], hyp["nbs"]) == ("auto", 8, 100, 8)
