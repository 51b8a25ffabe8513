"""Hostile input, second round (issue 27, items 7-12, 14-16): alias bombs, oversized checkpoints,
models and images, ota on crowded images, user errors that ended in a traceback, NaN rows in the
converters, BOMs and tampered label caches, ONNX files with foreign metadata. Each case ends with one
line naming the flag, key or file, or with a bounded, correct result."""
import errno
import json
import logging
import re
import time
import tracemalloc
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from data.converters import coco2yolo, voc2yolo
from data.converters.coco2yolo import convert_coco
from data.converters.voc2yolo import convert_voc
from fakes import fake_model, onnx_with_metadata
from test_hostile_cli import run_cli, train_args, train_main, write_png_1bit
from models.parse import count_yaml_params
from models.yolo import Model
from utils.assign.simota import row_iou
from utils.data.config import DatasetError, check_dataset
from utils.data.dataset import LoadImagesAndLabels
from utils.data.verify import check_pair, list_images
from utils.hyp import HypError, load_hyp
from utils.io.checkpoint import (FORMAT_TAG, CheckpointError, load_checkpoint, make_checkpoint, read_checkpoint,
                                 save_checkpoint)
from utils.io.cli import MAX_IMGSZ
from utils.core.yaml_file import MAX_ALIAS_VALUES, YamlFileError, load_yaml
from utils.loss import LOSSES
from utils.assign import simota as simota_module

ROOT = Path(__file__).resolve().parents[1]

# nine aliases of nine aliases ... : 9**9 strings once expanded, 1 KB as text
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


# ---- 9: YAML alias bombs -----------------------------------------------------------------------------

def test_alias_bomb_in_dataset_names_is_refused_quickly(tmp_path):
    data = tmp_path / "d.yaml"
    data.write_text(LAUGHS + "path: .\ntrain: .\nval: .\nnames: *i\n")
    t = time.perf_counter()
    with pytest.raises(DatasetError, match=f"{data}: aliases repeat more than {MAX_ALIAS_VALUES} values"):
        check_dataset(data)
    assert time.perf_counter() - t < 2


def test_alias_bomb_in_a_hyp_value_is_one_line(tiny_data, tmp_path, capsys, caplog):
    hyp = tmp_path / "hyp.bomb.yaml"
    hyp.write_text("bomb: " + LAUGHS.replace("\n", "\n  ").replace("a: &a", "\n  a: &a", 1) + "lr0: 0.01\n")
    with pytest.raises(HypError, match="aliases repeat more than"):
        load_hyp(hyp)
    code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--hyp", str(hyp)), capsys, caplog)
    assert code == 1 and f"error: {hyp}: aliases repeat more than {MAX_ALIAS_VALUES} values" in text


def test_every_yaml_reader_uses_the_bounded_loader(tmp_path):
    bomb = tmp_path / "m.yaml"
    bomb.write_text(LAUGHS)
    with pytest.raises(ValueError, match="aliases repeat more than"):
        Model(str(bomb))
    from utils.compare.runs import read_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "opt.yaml").write_text(LAUGHS)
    (run / "summary.json").write_text(json.dumps({"loss": "ota", "seed": 0, "epochs": 1, "map50": 0.1, "map": 0.05,
                                                  "per_class": {}}))
    with pytest.raises(ValueError, match="aliases repeat more than"):
        read_run(run)
    # a few anchors, a merge key and a self-reference
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {lr0: 0.01, momentum: 0.9}\nrun: {<<: *b, lr0: 0.02}\nlist: [*b, *b]\n")
    assert load_yaml(ok)["run"] == {"lr0": 0.02, "momentum": 0.9}
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [1, *a]\n")
    with pytest.raises(YamlFileError, match="refers to the value that contains it"):
        load_yaml(loop)


# ---- 8: checkpoint bombs: every zip entry, and the model its YAML describes ----------------------------

def _deflated_copy(src_file: Path, dst_file: Path) -> Path:
    with zipfile.ZipFile(src_file) as src, zipfile.ZipFile(dst_file, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    src_file.unlink()
    return dst_file


def test_deflated_data_pkl_bomb_is_refused_before_inflating(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"format": FORMAT_TAG, "note": "x" * (64 * 2 ** 20)}, plain)  # a 64 MiB data.pkl
    bomb = _deflated_copy(plain, tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 1_000_000
    for load in (read_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError, match=r"refusing to load .*data\.pkl declares \d+ bytes stored in \d+ "
                                                  r"\(a decompression bomb\?\)"):
            load(bomb)


def test_checkpoint_yaml_describing_a_huge_model_is_refused_before_building(tmp_path):
    model = Model(str(ROOT / "models/yolov5n.yaml"), nc=2)
    ckpt = make_checkpoint(model)
    ckpt["yaml"] = {**ckpt["yaml"], "width_multiple": 16}
    path = save_checkpoint(ckpt, tmp_path / "wide.pt")
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"describes a model of \d+M parameters, more than the limit of "
                                                  r"300M \(width_multiple 16"):
            load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2 ** 20, peak


def test_parameter_count_from_the_yaml_equals_the_built_model():
    for name, head in (("yolov5n", "anchor"), ("yolov5s", "dfl")):
        model = Model(str(ROOT / f"models/{name}.yaml"), head=head)
        assert count_yaml_params(model.yaml, 3, type(model.head)) == sum(p.numel() for p in model.parameters())


# ---- 10: sizes checked before allocation -------------------------------------------------------------

@pytest.mark.parametrize("key, value, message", [
    ("width_multiple", 64, "big.yaml describes a model of"),
    ("depth_multiple", 1000, "big.yaml: layer 2 (C3): 'number' 3 x depth_multiple 1000 = 3e+03 repeats; at most 1000"),
])
def test_train_refuses_a_cfg_too_large_to_build(key, value, message, tiny_data, tmp_path, capsys, caplog):
    cfg = yaml.safe_load((ROOT / "models/yolov5n.yaml").read_text())
    cfg[key] = value
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(cfg))
    code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--cfg", str(tmp_path / "big.yaml")),
                         capsys, caplog)
    assert code == 1 and f"error: {message}" in text and f"{key} {value}" in text
    assert not (tmp_path / "runs" / "exp").exists()


def test_image_sizes_have_a_limit(tiny_data, tmp_path, capsys, caplog):
    code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs") + ["--img", "100000"], capsys, caplog)
    assert code == 2 and f"argument --imgsz/--img/--img-size: must be at most {MAX_IMGSZ} pixels, got 100000" in text
    data = tmp_path / "gen.yaml"
    data.write_text(f"path: {tmp_path / 'gen'}\ngenerate: shapes\ngenerate_args: {{imgsz: 60000}}\n"
                    "train: images/train\nval: images/val\nnames: [a, b, c, d, e]\n")
    with pytest.raises(DatasetError, match=f"{data}: key 'generate_args': imgsz must be an integer in "
                                           f"32..{MAX_IMGSZ}, got 60000"):
        check_dataset(data)
    data.write_text(data.read_text().replace("imgsz: 60000", "size_of_things: 3"))
    with pytest.raises(DatasetError, match="key 'generate_args': .*size_of_things"):
        check_dataset(data)
    data.write_text(f"path: {tiny_data.parent}\ntrain: images/train\nval: images/val\nnames: [a, b, c, d, e]\n"
                    "train_defaults: {imgsz: 20000}\n")
    code, text = run_cli(train_main, [a for a in train_args(data, tmp_path / "runs") if a not in ("--img", "64")],
                         capsys, caplog)
    assert code == 1 and f"train_defaults key 'imgsz' must be at most {MAX_IMGSZ} pixels, got 20000" in text


# ---- 7: ota on a crowded image: bounded memory, the same result --------------------------------------

def _crowded_case(n, bs=4, hw=128, nc=3):
    """``n`` small boxes, all in image 0; images 1.. have none (a group of images without targets
    after a crowded one used to index past the last target)."""
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(bs, 3, hw // s, hw // s, 5 + nc, generator=g) for s in (8, 16, 32)]
    targets = torch.cat((torch.zeros(n, 1), torch.randint(0, nc, (n, 1), generator=g).float(),
                         torch.rand(n, 2, generator=g) * 0.9 + 0.05, torch.rand(n, 2, generator=g) * 0.1 + 0.02), 1)
    anchors = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
                           dtype=torch.float32).view(3, 3, 2) / torch.tensor([8.0, 16, 32]).view(3, 1, 1)
    return fake_model(nc, anchors), preds, targets, torch.zeros(bs, 3, hw, hw)


def test_ota_cost_matrix_of_a_crowded_image_is_chunked_with_the_same_result(monkeypatch):
    model, preds, targets, imgs = _crowded_case(300)
    whole = LOSSES["ota"](model, {"loss": "ota"}, max_pair_elems=2 ** 40)
    budget = 20_000
    chunked = LOSSES["ota"](model, {"loss": "ota"}, max_pair_elems=budget)
    sizes = []

    def recording_row_iou(boxes, columns):
        sizes.append(columns.shape[0] * columns.shape[-1])
        return row_iou(boxes, columns)

    monkeypatch.setattr(simota_module, "row_iou", recording_row_iou)
    a = whole.assign(preds, targets, imgs)
    assert max(sizes) > 20 * budget  # one matrix: 300 targets x every candidate of the image
    sizes.clear()
    b = chunked.assign(preds, targets, imgs)
    assert len(sizes) > 20 and max(sizes) <= budget  # the rows came in chunks within the budget
    assert sum(len(m) for m in a) > 300
    for x, y in zip(a, b):
        for f in ("image", "anchor", "gj", "gi", "target", "cls", "box_grid", "anchor_wh"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f
    assert torch.equal(whole(preds, targets, imgs)[0], chunked(preds, targets, imgs)[0])


# ---- 11: user errors are one line naming the flag, key or file ---------------------------------------

@pytest.mark.parametrize("text, message", [
    ("1: 0.5\n", "hyp key 1 is a int; hyp keys are names such as 'lr0'"),
    ("? [lr0, lrf]\n: 0.5\n", "not valid YAML at line 1 (found unhashable key)"),
])
def test_hyp_keys_that_are_not_names(text, message, tmp_path):
    hyp = tmp_path / "hyp.keys.yaml"
    hyp.write_text(text)
    with pytest.raises(HypError, match=re.escape(f"{hyp}: {message}")):
        load_hyp(hyp)


@pytest.mark.parametrize("line, message", [
    ("names: {0: a, x: b}", "'names' keys must be the integers 0..1, got 'x'"),
    ("names: [a]\nnc: [5]", "'nc' must be an integer, got [5]"),
])
def test_dataset_names_and_nc_of_the_wrong_type(line, message, tmp_path):
    data = tmp_path / "d.yaml"
    data.write_text(f"path: .\ntrain: .\nval: .\n{line}\n")
    with pytest.raises(DatasetError, match=re.escape(f"{data}: {message}")):
        check_dataset(data)


def test_state_dict_value_that_is_a_list(tmp_path):
    ckpt = make_checkpoint(Model(str(ROOT / "models/yolov5n.yaml"), nc=2))
    key = next(iter(ckpt["model"]))
    ckpt["model"][key], ckpt["ema"] = [1.0, 2.0], None
    path = save_checkpoint(ckpt, tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=re.escape(f"'{path}': state_dict key '{key}' holds a list, not a tensor")):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install -r requirements-export.txt")
    from utils.io.export import export
    folder = tmp_path_factory.mktemp("onnx")
    model = Model(str(ROOT / "models/yolov5n.yaml"), nc=3)
    model.names = ["a", "b", "c"]
    weights = save_checkpoint(make_checkpoint(model, opt={"imgsz": 64}), folder / "w.pt")
    (file,) = export(weights, ["onnx"], imgsz=[64, 64])
    return file


@pytest.mark.parametrize("changes, message", [
    ({"imgsz": "[0, 64]"}, "metadata 'imgsz' must be two positive integers, got [0, 64]"),
    ({"names": "a, b, c"}, "metadata 'names' is not JSON ('a, b, c')"),
])
def test_onnx_metadata_that_does_not_fit(changes, message, onnx_file, tmp_path):
    from utils.io.onnx_backend import OnnxModel
    bad = onnx_with_metadata(onnx_file, tmp_path / "bad.onnx", **changes)
    with pytest.raises(ValueError, match=re.escape(f"--weights {bad}: {message}")):
        OnnxModel(bad)
    assert OnnxModel(onnx_file).names == ["a", "b", "c"]


def test_resume_after_the_dataset_gained_a_class(tiny_data, tmp_path, capsys, caplog):
    code, _ = run_cli(train_main, train_args(tiny_data, tmp_path / "runs"), capsys, caplog)
    assert code == 0
    last = tmp_path / "runs" / "exp" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["epoch"], ckpt["opt"]["epochs"] = 0, 2  # as if stopped after epoch 0 of 2
    ckpt["optimizer"] = {"state": {}, "param_groups": []}  # refused before it is read
    grown = tmp_path / "grown.yaml"
    grown.write_text(tiny_data.read_text().replace("names: [", "names: ['new', "))
    ckpt["opt"]["data"] = str(grown)
    torch.save(ckpt, last)
    (last.parent.parent / "opt.yaml").write_text(yaml.safe_dump(  # opt.yaml agrees: not an edit of its own
        {k: list(v) if isinstance(v, tuple) else v for k, v in ckpt["opt"].items()}))
    code, text = run_cli(train_main, ["--resume", str(last)], capsys, caplog)
    assert code == 1 and f"error: --resume: {last} was trained on 5 classes but {grown} now has 6; the class count " \
                          f"changed" in text and f"start a new run with --weights {last}" in text


def test_freeze_beyond_the_model(tiny_data, tmp_path, capsys, caplog):
    code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--freeze", "1000"), capsys, caplog)
    assert code == 1 and "error: --freeze 1000: the model has 25 layers and the last (24, the head) must train" in text


def test_seed_must_be_a_valid_seed(tiny_data, tmp_path, capsys, caplog):
    code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--seed", "-5"), capsys, caplog)
    assert code == 2 and "argument --seed: must be an integer in 0..2147483647, got -5" in text


def test_cache_disk_on_a_read_only_dataset_falls_back(tiny_data, monkeypatch, caplog):
    images = tiny_data.parent / "images" / "val"
    real_save = np.save

    def save(file, *a, **k):
        if str(file).startswith(str(images)):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_save(file, *a, **k)

    monkeypatch.setattr(np, "save", save)
    with caplog.at_level(logging.WARNING):
        ds = LoadImagesAndLabels(images, img_size=64, cache_images="disk", nc=5)
    assert "--cache disk: cannot write" in caplog.text and "Read-only file system" in caplog.text
    assert ds.cache_mode is None and not list(images.glob("*.npy"))
    assert ds[0][0].shape[0] == 3  # images come from their files


def test_empty_summary_json_in_a_compared_run(tmp_path, capsys, caplog):
    import compare
    run = tmp_path / "runs" / "ota-s0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("")
    code, text = run_cli(lambda argv: compare.main(compare.parse_opt(argv)),
                         ["--report", str(tmp_path / "runs"), "--project", str(tmp_path / "out")], capsys, caplog)
    assert code == 1 and f"error: {run / 'summary.json'}: not valid JSON" in text


def _voc_tree(root: Path, size: str, box: tuple) -> Path:
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    cv2.imwrite(str(root / "JPEGImages" / "a.jpg"), np.zeros((50, 100, 3), np.uint8))
    boxes = "".join(f"<object><name>cat</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                    f"<ymax>{y2}</ymax></bndbox></object>" for x1, y1, x2, y2 in [(1, 1, 20, 20), box])
    (root / "Annotations" / "a.xml").write_text(f"<annotation><filename>a.jpg</filename><size>{size}</size>"
                                                f"{boxes}</annotation>")
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    return root


def test_voc_size_inf_is_one_line(tmp_path, capsys):
    src = _voc_tree(tmp_path / "voc", "<width>inf</width><height>50</height>", (2, 2, 30, 30))
    assert voc2yolo.main(["--source", str(src), "--out", str(tmp_path / "out")]) == 1
    assert f"error: {src / 'Annotations' / 'a.xml'}: <size> is not a finite number" in capsys.readouterr().err


def _coco(tmp_path: Path, annotations: list, images: list | None = None) -> Path:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "imgs" / "a.jpg"), np.zeros((40, 80, 3), np.uint8))
    jf = tmp_path / "c.json"
    jf.write_text(json.dumps({"images": images or [{"id": 1, "file_name": "a.jpg", "width": 80, "height": 40}],
                              "categories": [{"id": 1, "name": "cat"}], "annotations": annotations}))
    return jf


@pytest.mark.parametrize("images, annotations, message", [
    ([5], [], "images[0] must be an object, got 5"),
    (None, ["x"], "annotations[0] must be an object, got 'x'"),
    (None, [{"id": 1, "image_id": [1], "category_id": 1, "bbox": [0, 0, 9, 9]}],
     "annotations[0] has 'image_id' [1]; ids are integers"),
])
def test_coco_entries_of_the_wrong_type(images, annotations, message, tmp_path, capsys):
    jf = _coco(tmp_path, annotations, images)
    assert coco2yolo.main(["--json", str(jf), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o")]) == 1
    assert f"error: {jf}: {message}" in capsys.readouterr().err


# ---- 12: converters drop and count NaN rows; iscrowd must be 0 or 1 -------------------------------------

def test_voc_nan_coordinates_are_dropped_and_counted(tmp_path):
    src = _voc_tree(tmp_path / "voc", "<width>100</width><height>50</height>", ("nan", 2, 30, 30))
    st = convert_voc(src, tmp_path / "out")
    assert (st.boxes_written, st.boxes_dropped) == (1, 1)
    assert "nan" not in (tmp_path / "out" / "labels" / "train" / "a.txt").read_text()


def test_coco_nan_bbox_is_dropped_and_iscrowd_must_be_0_or_1(tmp_path, capsys):
    good = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0}
    nan = {"id": 2, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 0, 10, 10], "iscrowd": 0}
    jf = _coco(tmp_path, [good, nan])
    st, _ = convert_coco(jf, tmp_path / "imgs", tmp_path / "o", split="train")
    assert (st.boxes_written, st.boxes_dropped) == (1, 1)
    assert "nan" not in (tmp_path / "o" / "labels" / "train" / "a.txt").read_text()
    jf = _coco(tmp_path, [good, {**good, "id": 7, "iscrowd": "no"}])
    assert coco2yolo.main(["--json", str(jf), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o2"),
                           "--split", "train"]) == 1
    assert f"error: {jf}: annotation 7 of a.jpg: 'iscrowd' must be 0 or 1, got 'no'" in capsys.readouterr().err


def test_onnx_with_metadata_of_another_model_is_refused(onnx_file, tiny_data, tmp_path, capsys, caplog):
    import detect
    bad = onnx_with_metadata(onnx_file, tmp_path / "copied.onnx", names='["a", "b"]')  # 3 classes named as 2
    code, text = run_cli(detect.cli, ["--weights", str(bad), "--source", str(tiny_data.parent / "images" / "val"),
                                      "--img", "64", "--project", str(tmp_path / "runs")], capsys, caplog)
    assert code == 1 and f"error: --weights {bad}: the model outputs 3 class scores but its metadata names 2 " \
                          "classes (metadata copied from another model?)" in text


# ---- 14, 15: label files with a BOM; a label cache edited to hide a pixel bomb -------------------------

def _one_image_dataset(root: Path, label_text: str) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    (root / "labels" / "a.txt").write_bytes(label_text.encode("utf-8-sig"))
    return root / "images"


def test_a_bom_in_a_label_file_is_not_a_value(tmp_path):
    images = _one_image_dataset(tmp_path, "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n")
    assert (tmp_path / "labels" / "a.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    rec = check_pair(str(images / "a.png"), str(tmp_path / "labels" / "a.txt"), nc=2)
    assert rec.status == "ok" and rec.labels[:, 0].tolist() == [0, 1]
    (tmp_path / "list.txt").write_bytes(f"{images / 'a.png'}\n".encode("utf-8-sig"))
    assert list_images(tmp_path / "list.txt") == [str(images / "a.png")]


def test_edited_label_cache_cannot_hide_a_pixel_bomb(tmp_path, caplog):
    images = _one_image_dataset(tmp_path, "0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    write_png_1bit(images / "b.png", 25000, 25000)
    LoadImagesAndLabels(images, img_size=64, nc=1)
    cache = tmp_path / "labels.cache"
    data = json.loads(cache.read_text())
    for rec in data["records"]:
        if rec[0].endswith("b.png"):  # the attacker's edit: a harmless 256x256 image, the hash kept
            assert rec[1] == "corrupt"
            rec[1], rec[2], rec[4] = "ok", [256, 256], ""
    cache.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        ds = LoadImagesAndLabels(images, img_size=64, nc=1)
    assert ds.n == 1 and ds.im_files == [str(images / "a.png")]
    assert f"{images / 'b.png'}: ignoring corrupt image: 25000x25000 = 625000000 pixels exceeds the limit" in caplog.text


def test_a_shared_list_bomb_in_a_checkpoint_hyp_is_quoted_short():
    """A pickle can share a list with itself as YAML aliases do (a resumed checkpoint's hyp): the error
    message quotes it cut short instead of expanding 9**30 items."""
    bomb = [1]
    for _ in range(30):
        bomb = [bomb] * 9
    for hyp, key in (({"lr0": bomb}, "lr0"), ({"loss": bomb}, "loss"), ({"loss": "ota", "ota_topk": bomb}, "ota_topk")):
        with pytest.raises(HypError) as e:
            load_hyp(hyp)
        assert key in str(e.value) and len(str(e.value)) < 200
    with pytest.raises(ValueError, match="'width_multiple' must be a positive number, got nan"):
        Model({**yaml.safe_load((ROOT / "models/yolov5n.yaml").read_text()), "width_multiple": float("nan")})


def test_checkpoint_whose_names_do_not_match_its_classes(tmp_path):
    """The .pt sibling of item 16: names copied from another model would give class ids beyond them."""
    ckpt = make_checkpoint(Model(str(ROOT / "models/yolov5n.yaml"), nc=3))
    ckpt["names"] = ["a", "b"]
    path = save_checkpoint(ckpt, tmp_path / "names.pt")
    with pytest.raises(CheckpointError, match=re.escape(f"'{path}' names 2 classes but its model predicts 3")):
        load_checkpoint(path)
