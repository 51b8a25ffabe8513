"""VOC (on BCCD) and COCO converters: counts, class order, clipping, crowd/degenerate handling."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from data.converters.coco2yolo import convert_coco
from data.converters.voc2yolo import convert_voc
from utils.dataloaders import check_dataset

BCCD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bccd"
needs_bccd = pytest.mark.skipif(not (BCCD / "Annotations").is_dir(),
                                reason=f"BCCD not found at {BCCD} (shared dataset absent)")


@needs_bccd
def test_voc_bccd_counts(tmp_path, caplog):
    out = tmp_path / "bccd"
    with caplog.at_level(logging.WARNING):
        st = convert_voc(BCCD, out, names=["RBC", "WBC", "Platelets"])
    assert st.images == 364 and st.boxes_read == 4888
    assert st.boxes_written == 4886 and st.boxes_dropped == 2
    assert st.per_split == {"train": 205, "val": 87, "test": 72}
    dropped = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(dropped) == 2 and any("BloodImage_00338.xml" in m for m in dropped)
    rows = [ln.split() for f in (out / "labels").rglob("*.txt") for ln in f.read_text().splitlines()]
    assert len(rows) == 4886
    a = np.array(rows, float)
    assert np.bincount(a[:, 0].astype(int)).tolist() == [4153, 372, 361]  # 4155 RBC minus the 2 empty
    xyxy = np.concatenate((a[:, 1:3] - a[:, 3:5] / 2, a[:, 1:3] + a[:, 3:5] / 2), 1)
    assert xyxy.min() >= -1e-6 and xyxy.max() <= 1 + 1e-6 and (a[:, 3:5] > 0).all()
    assert len(list((out / "images" / "train").glob("*.jpg"))) == 205
    d = check_dataset(out / "data.yaml")
    assert d["names"] == ["RBC", "WBC", "Platelets"] and Path(d["val"]).is_dir()
    src = BCCD / "JPEGImages" / "BloodImage_00000.jpg"
    assert src.stat().st_size == (out / "images" / "val" / "BloodImage_00000.jpg").stat().st_size \
        or (out / "images" / "train" / "BloodImage_00000.jpg").exists() \
        or (out / "images" / "test" / "BloodImage_00000.jpg").exists()


@needs_bccd
def test_bccd_yaml_converts_on_first_use(tmp_path):
    f = tmp_path / "bccd.yaml"
    f.write_text(yaml.safe_dump({"path": "conv", "train": "images/train", "val": "images/val",
                                 "names": ["RBC", "WBC", "Platelets"], "convert": "voc",
                                 "source": str(BCCD), "splits": ["train", "val"]}))
    d = check_dataset(f)
    assert len(list(Path(d["train"]).glob("*.jpg"))) == 205 and d["nc"] == 3
    assert not (tmp_path / "conv" / "images" / "test").exists()


def test_voc_small_tree(tmp_path):
    """Hand-made VOC: 1-based coordinates, clipping, unknown class, discovered sorted names, difficult."""
    src = tmp_path / "voc"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (src / d).mkdir(parents=True)
    cv2.imwrite(str(src / "JPEGImages" / "a.jpg"), np.zeros((50, 100, 3), np.uint8))
    objs = [("dog", 0, (1, 1, 51, 26)), ("cat", 1, (60, 10, 120, 40)), ("cat", 0, (5, 5, 5, 9))]
    xml = "<annotation><filename>a.jpg</filename><size><width>100</width><height>50</height></size>"
    for name, diff, (x1, y1, x2, y2) in objs:
        xml += (f"<object><name>{name}</name><difficult>{diff}</difficult><bndbox><xmin>{x1}</xmin>"
                f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    (src / "Annotations" / "a.xml").write_text(xml + "</annotation>")
    (src / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    st = convert_voc(src, tmp_path / "out")
    rows = (tmp_path / "out" / "labels" / "train" / "a.txt").read_text().split("\n")
    assert st.boxes_written == 2 and st.boxes_dropped == 1
    assert rows[0] == "1 0.250000 0.250000 0.500000 0.500000"  # dog: (0, 0)-(50, 25) px
    assert rows[1] == "0 0.795000 0.480000 0.410000 0.600000"  # cat clipped at x = 100
    assert yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())["names"] == {0: "cat", 1: "dog"}
    st = convert_voc(src, tmp_path / "out2", names=["dog"], keep_difficult=False)
    assert st.boxes_written == 1 and st.boxes_dropped == 2


def test_coco_converter(tmp_path):
    imgs = tmp_path / "val2017"
    imgs.mkdir()
    for i in (1, 2, 3):
        cv2.imwrite(str(imgs / f"{i:012d}.jpg"), np.zeros((40, 80, 3), np.uint8))
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 80, "height": 40} for i in (1, 2, 3, 4)],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 18, "bbox": [60, 30, 40, 20], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 90, "bbox": [10, 10, 10, 10], "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 90, "bbox": [10, 10, 0, 10], "iscrowd": 0},
        ],
    }
    jf = tmp_path / "instances_val2017.json"
    jf.write_text(json.dumps(data))
    st, names = convert_coco(jf, imgs, tmp_path / "coco", split="val")
    assert names == ["person", "dog", "toothbrush"]  # sorted by category id
    assert (st.images, st.images_missing, st.boxes_written, st.crowd_skipped, st.boxes_dropped) == (3, 1, 2, 1, 1)
    rows = (tmp_path / "coco" / "labels" / "val" / "000000000001.txt").read_text().splitlines()
    assert rows == ["0 0.250000 0.250000 0.500000 0.500000", "1 0.875000 0.875000 0.250000 0.250000"]
    assert (tmp_path / "coco" / "labels" / "val" / "000000000003.txt").read_text() == ""
    y = yaml.safe_load((tmp_path / "coco" / "data.yaml").read_text())
    assert y["names"] == {0: "person", 1: "dog", 2: "toothbrush"} and y["val"] == "images/val"
