"""Hostile input, third round (issue 36's data, converter, model YAML, ONNX, export and detect cases; issue
38's val fraction): each case ends in a run that does what was asked or in one line naming the file, key
or flag, and no source file is ever lost (the converter cases compare file hashes before and after)."""
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from data.converters import coco2yolo, voc2yolo
from data.converters.common import _unit_hash, hash_splits
from fakes import onnx_with_metadata

ROOT = Path(__file__).resolve().parents[1]


def _hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _image(path: Path, w: int = 32, h: int = 24, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return path


def _coco_json(path: Path, files: list[str], names: tuple[str, ...] = ("cell",)) -> Path:
    """One 8x8 box of class 0 in each 32x24 image."""
    data = {"images": [{"id": i, "file_name": f, "width": 32, "height": 24} for i, f in enumerate(files)],
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 8, 8], "iscrowd": 0}
                            for i in range(len(files))]}
    path.write_text(json.dumps(data))
    return path


def _main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err.strip()


# ---- LOST: converting in place, a second split into one --out ---------------------------------------------

def test_coco_images_inside_out_are_never_touched_by_a_refused_split(tmp_path, capsys):
    """The hash split would link some of out/images/train's images into val: refused before any write."""
    out = tmp_path / "out"
    files = [f"{i}.jpg" for i in range(5)]
    for i, f in enumerate(files):
        _image(out / "images" / "train" / f, value=10 * i)
    jf = _coco_json(tmp_path / "train.json", files)
    before = _hashes(tmp_path)
    assert "val" in hash_splits(files, 0.2, 0.0)  # the default split moves one of them
    rc, _, err = _main(coco2yolo.main, ["--json", jf, "--images", out / "images" / "train", "--out", out], capsys)
    assert rc == 1 and err.count("\n") == 0 and err.startswith(f"error: {out / 'images' / 'train'}/")
    assert "converting in place works only where every image already sits in its split's folder" in err
    assert _hashes(tmp_path) == before and sorted(p.name for p in out.iterdir()) == ["images"]


def test_coco_in_place_with_the_folders_split_writes_labels_beside_the_images(tmp_path, capsys):
    out = tmp_path / "out"
    files = [f"{i}.jpg" for i in range(5)]
    for i, f in enumerate(files):
        _image(out / "images" / "train" / f, value=10 * i)
    jf = _coco_json(tmp_path / "train.json", files)
    images_before = _hashes(out / "images")
    rc, _, _ = _main(coco2yolo.main, ["--json", jf, "--images", out / "images" / "train", "--out", out,
                                      "--split", "train"], capsys)
    assert rc == 0 and _hashes(out / "images") == images_before
    assert sorted(p.name for p in (out / "labels" / "train").iterdir()) == [f"{i}.txt" for i in range(5)]
    assert (out / "labels" / "train" / "3.txt").read_text() == "0 0.250000 0.333333 0.250000 0.333333\n"
    assert yaml.safe_load((out / "data.yaml").read_text())["train"] == "images/train"


def test_coco_second_split_keeps_the_users_data_yaml(tmp_path, capsys):
    src = tmp_path / "src"
    for f in ("t0.jpg", "t1.jpg", "v0.jpg"):
        _image(src / f)
    out = tmp_path / "out"
    train_json = _coco_json(tmp_path / "train.json", ["t0.jpg", "t1.jpg"])
    assert _main(coco2yolo.main, ["--json", train_json, "--images", src, "--out", out, "--split", "train"],
                 capsys)[0] == 0
    written = (out / "data.yaml").read_text()
    assert "val: images/train\n" in written  # no val yet: val reads train
    edited = ("# my blood cells, 2026\n" + written.replace("epochs: 100", "epochs: 30  # enough here")
              + "download: no  # an extra key\n")
    (out / "data.yaml").write_text(edited)
    before = _hashes(src)
    val_json = _coco_json(tmp_path / "val.json", ["v0.jpg"])
    assert _main(coco2yolo.main, ["--json", val_json, "--images", src, "--out", out, "--split", "val"],
                 capsys)[0] == 0
    assert (out / "data.yaml").read_text() == edited.replace("val: images/train\n", "val: images/val\n")
    assert _hashes(src) == before and (out / "labels" / "val" / "v0.txt").is_file()

    # a JSON of other classes would give the same ids other meanings: refused, nothing written
    other = _coco_json(tmp_path / "test.json", ["v0.jpg"], names=("rbc", "wbc"))
    state = _hashes(tmp_path)
    rc, _, err = _main(coco2yolo.main, ["--json", other, "--images", src, "--out", out, "--split", "test"], capsys)
    assert rc == 1 and err.count("\n") == 0
    assert err.startswith(f"error: {out / 'data.yaml'} names the classes {{0: 'cell'}}, this conversion "
                          "['rbc', 'wbc']: their ids would not match")
    assert _hashes(tmp_path) == state and not (out / "images" / "test").exists()


def test_coco_second_json_of_one_split_never_replaces_an_earlier_image(tmp_path, capsys, caplog):
    """Two JSONs of the train split, each with its own 001.png (another picture): the second is written as
    001_2.png and the first keeps its image and label; converting the second again changes nothing."""
    a, b = _image(tmp_path / "a" / "001.png", value=40), _image(tmp_path / "b" / "001.png", value=200)
    out = tmp_path / "out"
    for folder, name in ((a.parent, "a.json"), (b.parent, "b.json")):
        assert _main(coco2yolo.main, ["--json", _coco_json(tmp_path / name, ["001.png"]), "--images", folder,
                                      "--out", out, "--split", "train"], capsys)[0] == 0
    images = out / "images" / "train"
    assert sorted(p.name for p in images.iterdir()) == ["001.png", "001_2.png"]
    assert (images / "001.png").read_bytes() == a.read_bytes() and (images / "001_2.png").read_bytes() == b.read_bytes()
    assert sorted(p.name for p in (out / "labels" / "train").iterdir()) == ["001.txt", "001_2.txt"]
    assert f"shares the base name 001 with {images / '001.png'} (an earlier conversion's); written as 001_2.png" \
        in caplog.text
    state = _hashes(out)
    for folder, name, extra in ((b.parent, "b.json", []), (a.parent, "a.json", ["--copy"])):  # reruns: same names
        assert _main(coco2yolo.main, ["--json", tmp_path / name, "--images", folder, "--out", out, "--split", "train",
                                      *extra], capsys)[0] == 0
    assert _hashes(out) == state and sorted(p.name for p in images.iterdir()) == ["001.png", "001_2.png"]


def test_coco_data_yaml_in_flow_style_is_refused_untouched(tmp_path, capsys):
    src = tmp_path / "src"
    _image(src / "a.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.yaml").write_text("{path: ., train: images/train, names: {0: cell}, epochs: 3}\n")
    state = _hashes(tmp_path)
    rc, _, err = _main(coco2yolo.main, ["--json", _coco_json(tmp_path / "v.json", ["a.jpg"]), "--images", src,
                                        "--out", out, "--split", "val"], capsys)
    assert rc == 1 and err == (f"error: {out / 'data.yaml'}: cannot set val without touching the rest of it "
                               "(written in flow style?); set them by hand, or convert into another --out")
    assert _hashes(tmp_path) == {**state, "v.json": _hashes(tmp_path)["v.json"]}
    assert not (out / "images").exists()


def _labelimg(folder: Path, n: int) -> Path:
    for i in range(n):
        _image(folder / f"im{i}.jpg", value=5 * i)
        (folder / f"im{i}.xml").write_text(
            "<annotation><size><width>32</width><height>24</height></size><object><name>cell</name>"
            "<bndbox><xmin>5</xmin><ymin>5</ymin><xmax>13</xmax><ymax>13</ymax></bndbox></object></annotation>")
    return folder


def test_voc_into_an_existing_out_or_onto_its_own_images_is_refused_untouched(tmp_path, capsys):
    src = _labelimg(tmp_path / "labelimg", 4)
    out = tmp_path / "out"
    before = _hashes(src)
    assert _main(voc2yolo.main, ["--source", src, "--out", out], capsys)[0] == 0
    assert _hashes(src) == before
    (out / "data.yaml").write_text((out / "data.yaml").read_text() + "# mine\n")
    state = _hashes(tmp_path)
    for source in (src, out / "images" / "train", out):
        rc, _, err = _main(voc2yolo.main, ["--source", source, "--out", out], capsys)
        assert rc == 1 and err == f"error: {out} exists; remove it first"
    assert _hashes(tmp_path) == state


# ---- issue 38: --val-fraction is exact --------------------------------------------------------------------

def test_val_fraction_is_exact_and_adding_images_moves_few_and_only_at_the_cut():
    names = [f"IMG_{i:04d}.jpg" for i in range(200)]
    splits = hash_splits(names, 0.2, 0.0)
    assert splits.count("val") == 40 and sum(_unit_hash(n, 0) < 0.2 for n in names) == 48  # a cut at 0.2: 48
    assert hash_splits(names, 0.2, 0.1).count("test") == 20
    grown = hash_splits(names + [f"new_{i}.jpg" for i in range(5)], 0.2, 0.0)
    moved = [n for n, a, b in zip(names, splits, grown) if a != b]
    assert grown.count("val") == 41 and len(moved) == 1  # at most 5 + 1
    # the moved images lie between the old and the new cut of the hash; every other image kept its split
    ranked = sorted(names, key=lambda n: _unit_hash(n, 0))
    old_cut = {n for n in ranked[:40]}
    new_val = {n for n, s in zip(names, grown) if s == "val"}
    assert new_val == set(ranked[:len(new_val)]) and set(moved) == old_cut ^ new_val


def test_voc_val_fraction_gives_round_f_n(tmp_path):
    st = voc2yolo.convert_voc(_labelimg(tmp_path / "src", 12), tmp_path / "out", val_fraction=0.25)
    assert st.per_split == {"train": 9, "val": 3}
    assert len(list((tmp_path / "out" / "images" / "val").iterdir())) == 3


# ---- data: a label path that is a folder; a mosaic tile that cannot be decoded ------------------------------

def test_a_label_path_that_is_a_folder_is_skipped_named_and_counted(tmp_path, caplog):
    from conftest import write_tiny_dataset
    from utils.data.dataset import LoadImagesAndLabels

    write_tiny_dataset(tmp_path / "ds")
    label = tmp_path / "ds/labels/train/000003.txt"
    label.unlink()
    label.mkdir()
    with caplog.at_level("INFO"):
        ds = LoadImagesAndLabels(str(tmp_path / "ds/images/train"), 64, 4, prefix="train: ")
    assert ds.n == 7 and not any(f.endswith("000003.png") for f in ds.im_files)
    lines = [ln for ln in caplog.text.splitlines() if str(label) in ln]
    assert len(lines) == 1 and lines[0].endswith(
        f"train: WARNING: {label}: ignoring image and labels: the label path is a folder, not a file")
    assert "train: 7 images, 0 backgrounds, 1 corrupt" in caplog.text


def test_an_undecodable_mosaic_tile_costs_the_tile_not_the_item(tmp_path, caplog):
    import random

    from conftest import write_tiny_dataset
    from test_hostile_round2_runs import corrupt_png_pixels
    from utils.data.dataset import LoadImagesAndLabels

    write_tiny_dataset(tmp_path / "ds")
    bad = tmp_path / "ds/images/train/000001.png"
    corrupt_png_pixels(bad)
    ds = LoadImagesAndLabels(str(tmp_path / "ds/images/train"), 64, 4, augment=True, hyp={"mosaic": 1.0},
                             prefix="train: ", use_label_cache=False)
    bad_i = ds.im_files.index(str(bad))
    loaded: list[int] = []
    real_load = ds.load_image
    ds.load_image = lambda i: (loaded.append(i), real_load(i))[1]
    with_bad = 0
    for k in range(ds.n):
        loaded.clear()
        assert ds[k] is not None
        random.seed(ds.item_seed(k))  # the tiles the item drew: _get_item's first draws
        random.random()
        drawn = [k] + random.choices(range(ds.n), k=3)
        random.shuffle(drawn)
        tiles = [i for i in loaded if i != bad_i]  # the images decoded, in tile order
        assert len(tiles) == 4 and all(t == d for t, d in zip(tiles, drawn) if d != bad_i)
        with_bad += bad_i in drawn
    assert with_bad >= 2 and ds.unreadable == 1
    assert sum(str(bad) in ln for ln in caplog.text.splitlines()) == 1


# ---- ONNX: metadata that does not describe its graph; detect --precision bf16 ------------------------------

@pytest.fixture(scope="module")
def static_onnx(tmp_path_factory) -> Path:
    """The tiny anchor model of test_export (strides 4, 8; 3 anchors) exported with a fixed 64x64 input:
    960 output rows."""
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install -r requirements-export.txt")
    from test_export import tiny_checkpoint
    from utils.io.export import export

    _, weights = tiny_checkpoint(tmp_path_factory.mktemp("onnx") / "w.pt", "anchor")
    (file,) = export(weights, ["onnx"], dynamic=False)
    return file


@pytest.mark.parametrize("changes, message", [
    ({"stride": "[1e-300, 8]"}, "metadata 'stride' must be a list of whole numbers of pixels (8, 16, 32), got "
                                "[1e-300, 8]"),
    ({"stride": "[4, 1e300]"}, "metadata 'imgsz' [64, 64] is not a multiple of the largest 'stride' 1e+300"),
    ({"stride": "[5, 8]"}, "metadata 'stride' [5, 8] does not fit the graph: 960 output rows for a 64x64 input"),
    ({"imgsz": "[320, 320]"}, "metadata 'imgsz' is [320, 320], but the graph's input is fixed at 64x64"),
    ({"dynamic": "true"}, "metadata 'dynamic' is true, but the graph's input is fixed at 64x64"),
    ({"dynamic": '"no"'}, "metadata 'dynamic' must be true or false, got 'no'"),
])
def test_onnx_metadata_is_checked_against_the_graph(changes, message, static_onnx, tmp_path, capsys, caplog):
    import detect
    from test_hostile_cli import run_cli
    from utils.io.onnx_backend import OnnxModel

    assert OnnxModel(static_onnx).imgsz == [64, 64]
    bad = onnx_with_metadata(static_onnx, tmp_path / "bad.onnx", **changes)
    _image(tmp_path / "a.jpg", 64, 48)
    code, text = run_cli(detect.cli, ["--weights", str(bad), "--source", str(tmp_path / "a.jpg"),
                                      "--project", str(tmp_path / "runs")], capsys, caplog)
    errors = [ln for ln in text.splitlines() if "error:" in ln]
    assert code == 1 and len(errors) == 1 and f"error: --weights {bad}: {message}" in errors[0]
    assert not (tmp_path / "runs").exists()


def test_onnx_fixed_to_another_batch_is_one_line(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install -r requirements-export.txt")
    import torch
    from test_export import tiny_checkpoint
    from utils.io.export import export
    from utils.io.onnx_backend import OnnxModel

    _, weights = tiny_checkpoint(tmp_path / "w.pt", "anchor")
    (file,) = export(weights, ["onnx"], dynamic=False, batch_size=2)
    model = OnnxModel(file)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 960, 7)
    with pytest.raises(ValueError, match=f"^{file} was exported for batches of 2, got 1 image"):
        model(torch.zeros(1, 3, 64, 64))


def test_detect_bf16_with_onnx_says_it_runs_float32(static_onnx, tmp_path, capsys):
    import detect

    _image(tmp_path / "a.jpg", 64, 48)
    kw = dict(weights=static_onnx, source=str(tmp_path / "a.jpg"), device="cpu", conf_thres=0.0, max_det=3,
              save_txt=True, save_conf=True, nosave=True, project=tmp_path / "runs")
    bf16_dir = detect.run(precision="bf16", **kw)
    lines = capsys.readouterr().out.splitlines()
    assert [ln for ln in lines if "precision" in ln] == [
        "WARNING: --precision bf16 does not apply to an .onnx model: onnxruntime runs it in float32, the precision "
        "it was exported in (give the .pt file for bf16)"]
    fp32_dir = detect.run(precision="fp32", **kw)
    assert "--precision" not in capsys.readouterr().out
    assert (bf16_dir / "labels/a.txt").read_text() == (fp32_dir / "labels/a.txt").read_text()


# ---- export: --opset, a read-only folder, a full disk --------------------------------------------------------

@pytest.fixture()
def tiny_weights(tmp_path) -> Path:
    pytest.importorskip("onnx", reason="onnx not installed: pip install -r requirements-export.txt")
    from test_export import tiny_checkpoint
    return tiny_checkpoint(tmp_path / "w" / "best.pt", "anchor")[1]


def test_export_opset_outside_what_onnx_and_torch_support(tiny_weights, capsys, caplog):
    import onnx
    import export as export_cli
    from test_hostile_cli import run_cli
    from torch.onnx import _constants
    from utils.io.export import opset_range

    high = min(onnx.defs.onnx_opset_version(), _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    assert opset_range() == (11, high)
    for opset in ("1", "10", str(high + 1), "99"):
        code, text = run_cli(lambda argv: export_cli.main(export_cli.parse_opt(argv)),
                             ["--weights", str(tiny_weights), "--opset", opset], capsys, caplog)
        assert code == 1 and f"error: --opset {opset}: choose from 11 to {high} (from 11, where ONNX's Resize " in text
    assert sorted(p.name for p in tiny_weights.parent.iterdir()) == ["best.pt"]
    from utils.io.export import export
    (file,) = export(tiny_weights, ["onnx"], opset=high)
    assert onnx.load(str(file)).opset_import[0].version == high


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full to fill a disk")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_onto_a_full_disk_keeps_the_earlier_file_and_leaves_no_partial_one(fmt, tiny_weights):
    """The temporary file the export writes is made a link to /dev/full: every write to it fails with ENOSPC,
    as on a full disk (torch's own TorchScript writer aborted the process there)."""
    from utils.io.export import ExportError, export

    (file,) = export(tiny_weights, [fmt])
    before = _hashes(tiny_weights.parent)
    os.symlink("/dev/full", file.with_name(f".{file.name}.tmp-{os.getpid()}"))
    with pytest.raises(ExportError) as e:
        export(tiny_weights, [fmt], imgsz=[32, 32])
    assert str(e.value) == (f"cannot write {file} (No space left on device); nothing was written there: free "
                            "space, or write elsewhere with --out-dir DIR")
    assert _hashes(tiny_weights.parent) == before and sorted(p.name for p in tiny_weights.parent.iterdir()) == \
        sorted(["best.pt", file.name])


def test_export_out_dir_writes_elsewhere(tiny_weights, tmp_path):
    from utils.io.export import ExportError, export

    out = tmp_path / "exports"
    out.mkdir()
    assert export(tiny_weights, ["onnx", "torchscript"], out_dir=out) == [out / "best.onnx", out / "best.torchscript"]
    assert sorted(p.name for p in tiny_weights.parent.iterdir()) == ["best.pt"]
    with pytest.raises(ExportError, match=f"^--out-dir {tmp_path / 'nowhere'} is not a folder$"):
        export(tiny_weights, ["onnx"], out_dir=tmp_path / "nowhere")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders (checked by hand on a read-only mount)")
def test_export_from_a_read_only_folder_is_one_line(tiny_weights):
    from utils.io.export import ExportError, export

    tiny_weights.parent.chmod(0o555)
    try:
        with pytest.raises(ExportError) as e:
            export(tiny_weights, ["onnx"])
    finally:
        tiny_weights.parent.chmod(0o755)
    assert str(e.value) == (f"cannot write {tiny_weights.parent / 'best.onnx'} (Permission denied); nothing was "
                            "written there: write elsewhere with --out-dir DIR")
    assert sorted(p.name for p in tiny_weights.parent.iterdir()) == ["best.pt"]


# ---- model YAMLs: one check against the schema, naming the file, the layer and the field --------------------

def _yolov5n() -> dict:
    return yaml.safe_load((ROOT / "models/yolov5n.yaml").read_text())


def _set(path: tuple, value) -> dict:
    d = _yolov5n()
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d


@pytest.mark.parametrize("cfg, message", [
    (_set(("depth_multiple",), 1e308), "layer 2 (C3): 'number' 3 x depth_multiple 1e+308 = inf repeats; at most 1000"),
    (_set(("width_multiple",), 1e308), "layer 0 (Conv): 'args'[0] 64 x width_multiple 1e+308 channels; at most 65536"),
    (_set(("backbone", 1, 3, 0), 0), "layer 1 (Conv): 'args'[0] (output channels) must be a positive integer, got 0"),
    (_set(("head", 0, 3, 0), -512), "layer 10 (Conv): 'args'[0] (output channels) must be a positive integer, got -512"),
    (_set(("backbone", 3, 3, 1), 0), "layer 3 (Conv): 'args'[1] (kernel) must be a positive integer, got 0"),
    (_set(("anchors", 1), [30, 61, 62]), "'anchors' row 1 must be w, h pairs of positive numbers, got [30, 61, 62]"),
    (_set(("anchors",), "P3/8"), "'anchors' must be a list of rows of w, h pixel pairs (one row per level), or a "
                                 "count, got 'P3/8'"),
    (_set(("anchors", 2), "big"), "'anchors' row 2 must be w, h pairs of positive numbers, got 'big'"),
    (_set(("anchors",), [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]),
     "layer 24 (Detect): 'from' reads 3 levels, but 'anchors' has 2 rows (one per level)"),
    (_set(("backbone", 2, 1), "3"), "layer 2 (C3): 'number' (repeats) must be a positive integer, got '3'"),
    (_set(("backbone", 4, 0), 30), "layer 4 (C3): 'from' 30 must be an earlier layer: 0..3, or -4..-1 counting back, "
                                   "or a list of those"),
    (_set(("head", 2, 0), [-1, 60]), "layer 12 (Concat): 'from' [-1, 60] must be an earlier layer: 0..11, or "
                                     "-12..-1 counting back, or a list of those"),
    (_set(("head", 14, 0), [17, 20, 99]), "layer 24 (Detect): 'from' [17, 20, 99] must be an earlier layer: 0..23"),
    (_set(("backbone",), []), "'backbone' must be a non-empty list of [from, number, module, args] rows, got []"),
    (_set(("backbone", 1), [-1, 1, "Conv"]), "layer 1: expected a row [from, number, module, args], got "
                                             "[-1, 1, 'Conv']"),
    (_set(("nc",), 0), "'nc' must be a positive integer, got 0"),
])
def test_model_yaml_against_the_schema(cfg, message, tmp_path, tiny_data, capsys, caplog):
    from models.parse import ModelYamlError
    from models.yolo import Model
    from test_hostile_cli import run_cli, train_args, train_main

    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ModelYamlError) as e:
        Model(str(f))
    assert str(e.value).startswith(f"bad.yaml: {message}")
    if "1e+308" in message or "'3'" in message:  # the CLI: one line, no run folder
        code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--cfg", str(f)), capsys, caplog)
        assert code == 1 and f"error: bad.yaml: {message}" in text and not (tmp_path / "runs" / "exp").exists()


def test_every_shipped_model_yaml_passes_the_schema():
    from models.parse import validate_model_dict
    from models.yolo import HEADS

    for f in sorted((ROOT / "models").glob("yolov5*.yaml")):
        for head in HEADS.values():
            validate_model_dict(yaml.safe_load(f.read_text()), f.name, head)
