"""val.py / detect.py defaults taken from the checkpoint (image size, dataset YAML), val --verbose, and
--help that shows the defaults of train.py, val.py and detect.py."""
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
import train
import val
import utils.dataloaders
from models.yolo import Model
from utils.data.shapes_dataset import CLASSES
from utils.io.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from utils.io.recorded import pick_data, pick_imgsz, recorded_data, recorded_imgsz

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "checkpoints" / "yolov5n-bccd-official.pt"


@pytest.fixture(scope="module")
def shapes_model() -> Model:
    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=len(CLASSES))
    model.names = list(CLASSES)
    return model


def write_weights(model: Model, path: Path, **opt) -> Path:
    return save_checkpoint(make_checkpoint(model, opt=opt), path)


def test_recorded_imgsz_of_each_format():
    assert recorded_imgsz({"imgsz": 320}) == (320, "imgsz")
    assert recorded_imgsz({"img_size": [640, 416]}) == (416, "img_size")  # YOLOv5 <= v5.0: [train, test]
    for opt in ({}, {"imgsz": None}, {"imgsz": 0}, {"imgsz": True}, {"imgsz": "320"}, {"img_size": []}):
        assert recorded_imgsz(opt) is None, opt
    assert pick_imgsz(512, {"opt": {"imgsz": 320}}) == (512, "from --img")
    assert pick_imgsz(None, {"opt": {"imgsz": 320}}) == (320, "from the checkpoint's opt.imgsz")
    assert pick_imgsz(None, {"opt": {}}) == (640, "the default, as the checkpoint records none")


@pytest.mark.skipif(not OFFICIAL.is_file(), reason=f"{OFFICIAL} not present")
def test_official_checkpoint_records_320_and_its_yaml():
    _, meta = load_checkpoint(OFFICIAL)
    assert pick_imgsz(None, meta) == (320, "from the checkpoint's opt.imgsz")
    assert meta["opt"]["data"] == "data/bccd.yaml"


def test_recorded_data_relative_absolute_missing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "data").mkdir(parents=True)
    yaml_file = tmp_path / "b" / "data" / "x.yaml"
    yaml_file.write_text("names: [a]\n")
    roots = (tmp_path / "a", tmp_path / "b")
    assert recorded_data({"data": "data/x.yaml"}, roots) == (yaml_file, "from the checkpoint's opt.data (data/x.yaml)")
    assert recorded_data({"data": str(yaml_file)}, roots)[0] == yaml_file
    assert recorded_data({"data": "data/gone.yaml"}, roots) == (None, "the recorded data/gone.yaml does not exist here")
    assert recorded_data({}, roots) == (None, "the checkpoint records none")
    assert pick_data("mine.yaml", {"opt": {"data": str(yaml_file)}}, "fb.yaml") == ("mine.yaml", "from --data")
    assert pick_data(None, {"opt": {"data": str(yaml_file)}}, "fb.yaml")[0] == str(yaml_file)
    assert pick_data(None, {"opt": {"data": str(tmp_path / "gone.yaml")}}, "fb.yaml") == (
        "fb.yaml", f"the default, as the recorded {tmp_path / 'gone.yaml'} does not exist here")


def run_val(argv, monkeypatch, caplog) -> int:
    """val.run on ``argv``; returns the image size it handed to the dataloader."""
    real, seen = utils.dataloaders.create_dataloader, []

    def spy(path, imgsz, *args, **kwargs):
        seen.append(imgsz)
        return real(path, imgsz, *args, **kwargs)

    monkeypatch.setattr(utils.dataloaders, "create_dataloader", spy)
    with caplog.at_level(logging.INFO):
        val.run(val.parse_opt([*argv, "--workers", "0", "--quiet", "--exist-ok"]))
    return seen[0]


def test_val_takes_size_and_data_from_the_checkpoint(shapes_model, tiny_data, tmp_path, monkeypatch, caplog):
    weights = write_weights(shapes_model, tmp_path / "w.pt", imgsz=96, data=str(tiny_data))
    project = ["--project", str(tmp_path / "runs")]
    assert run_val(["--weights", str(weights), *project], monkeypatch, caplog) == 96
    assert f"dataset {tiny_data}, from the checkpoint's opt.data ({tiny_data})" in caplog.text
    assert "image size 96, from the checkpoint's opt.imgsz" in caplog.text
    caplog.clear()
    assert run_val(["--weights", str(weights), "--img", "70", "--data", str(tiny_data), *project],
                   monkeypatch, caplog) == 96  # 70 rounded up to the stride
    assert "image size 96, from --img, rounded up from 70 to a multiple of stride 32" in caplog.text
    assert f"dataset {tiny_data}, from --data" in caplog.text


def test_val_without_recorded_size_uses_640(shapes_model, tiny_data, tmp_path, monkeypatch, caplog):
    weights = write_weights(shapes_model, tmp_path / "w.pt")
    argv = ["--weights", str(weights), "--data", str(tiny_data), "--project", str(tmp_path / "runs")]
    assert run_val(argv, monkeypatch, caplog) == 640
    assert "image size 640, the default, as the checkpoint records none" in caplog.text


def table_rows(messages: list[str]) -> list[str]:
    """First words of the results-table rows among log messages (the 'all' row and per-class rows)."""
    return [m.split()[0] for m in messages if m.split()[:1] and m.split()[0] in ("all", *CLASSES)]


class ConstantDetector(torch.nn.Module):
    """Eval-mode stand-in that finds, in every 64 x 64 image, ``boxes`` (cls, x1, y1, x2, y2 original
    pixels) with confidence 0.9: returns ``(pred (bs, N, 5 + nc) xywh of the letterboxed batch, raw)``."""

    def __init__(self, boxes: list[tuple[int, float, float, float, float]], nc: int):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.boxes, self.nc, self.stride = boxes, nc, torch.tensor([8.0, 16.0, 32.0])

    def forward(self, x: torch.Tensor):
        bs, _, h, w = x.shape
        padw, padh = (w - 64) / 2, (h - 64) / 2
        out = torch.zeros(bs, len(self.boxes), 5 + self.nc)
        for j, (c, x1, y1, x2, y2) in enumerate(self.boxes):
            out[:, j, :4] = torch.tensor([(x1 + x2) / 2 + padw, (y1 + y2) / 2 + padh, x2 - x1, y2 - y1])
            out[:, j, 4], out[:, j, 5 + c] = 0.9, 1.0
        return out, []


def test_val_per_class_rows_only_with_verbose(tmp_path, monkeypatch, caplog):
    boxes = [(0, 16.0, 16.0, 48.0, 48.0), (2, 2.0, 4.0, 14.0, 12.0)]  # classes 0 and 2 in every image
    for d in ("images", "labels"):
        (tmp_path / d).mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.full((64, 64, 3), 90, np.uint8))
        (tmp_path / "labels" / f"{name}.txt").write_text("".join(
            f"{c} {(x1 + x2) / 128} {(y1 + y2) / 128} {(x2 - x1) / 64} {(y2 - y1) / 64}\n" for c, x1, y1, x2, y2 in boxes))
    data = tmp_path / "d.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images\nval: images\nnames: {list(CLASSES)}\n")
    model = ConstantDetector(boxes, len(CLASSES))
    monkeypatch.setattr("utils.io.checkpoint.load_checkpoint", lambda *a, **k: (model, {"opt": {}}))
    argv = ["--weights", "any.pt", "--data", str(data), "--img", "64", "--project", str(tmp_path / "runs")]
    run_val(argv, monkeypatch, caplog)
    assert table_rows(caplog.messages) == ["all"]
    caplog.clear()
    run_val([*argv, "--verbose"], monkeypatch, caplog)
    assert table_rows(caplog.messages) == ["all", CLASSES[0], CLASSES[2]]


def test_detect_takes_size_from_the_checkpoint(shapes_model, tmp_path, capsys):
    weights = write_weights(shapes_model, tmp_path / "w.pt", imgsz=96)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 128, np.uint8))
    opt = detect.parse_opt(["--weights", str(weights), "--source", str(tmp_path / "a.png"), "--nosave",
                            "--project", str(tmp_path / "runs")])
    assert opt.imgsz is None and opt.line_thickness is None
    detect.main(opt)
    out = capsys.readouterr().out
    assert "image size 96, from the checkpoint's opt.imgsz" in out
    assert "at shape (1, 3, 96, 96)" in out
    detect.main(detect.parse_opt(["--weights", str(weights), "--source", str(tmp_path / "a.png"), "--nosave",
                                  "--img", "64", "--project", str(tmp_path / "runs")]))
    out = capsys.readouterr().out
    assert "image size 64 x 64, from --img" in out and "at shape (1, 3, 64, 64)" in out


@pytest.mark.parametrize("cli, flag, default", [
    (train, "--patience", "100"), (train, "--seed", "0"), (val, "--batch-size", "32"),
    (val, "--conf-thres", "0.001"), (detect, "--conf-thres", "0.25"), (detect, "--max-det", "1000")])
def test_help_shows_defaults(cli, flag, default, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_opt(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())  # argparse wraps lines
    after = text.split(f"{flag} ", 1)[1]
    assert f"(default: {default})" in after.split(" --", 1)[0], after[:200]
    assert "(default: None)" not in text and "(default: False)" not in text


def test_val_names_the_recorded_dataset_when_classes_differ(tiny_data, tmp_path, caplog):
    model = Model("models/yolov5n.yaml", nc=3)
    weights = write_weights(model, tmp_path / "w.pt", data=str(tiny_data))
    opt = val.parse_opt(["--weights", str(weights), "--project", str(tmp_path / "runs"), "--workers", "0"])
    assert val.main(opt) == 1
    assert caplog.messages[-1] == (f"error: {weights} was trained for 3 classes but {tiny_data} has 5 (from the "
                                   f"checkpoint's opt.data ({tiny_data})); give the right one with --data")
    assert not (tmp_path / "runs").exists()


def test_val_checks_the_class_count_before_any_conversion(tmp_path, caplog):
    weights = write_weights(Model("models/yolov5n.yaml", nc=3), tmp_path / "w.pt", data="")
    yaml_file = tmp_path / "voc.yaml"  # converting would fail (no source): the class count is found first
    yaml_file.write_text("path: converted\ntrain: images/train\nval: images/val\nnames: [a, b]\n"
                         "convert: voc\nsource: no_such_voc_folder\n")
    opt = val.parse_opt(["--weights", str(weights), "--data", str(yaml_file), "--project", str(tmp_path / "runs")])
    assert val.main(opt) == 1
    assert caplog.messages[-1] == f"error: {weights} was trained for 3 classes but {yaml_file} has 2"
    assert not (tmp_path / "converted").exists()


def test_data_given_a_folder_asks_for_its_yaml(tmp_path, caplog):
    from utils.data.config import DatasetError, check_dataset

    (tmp_path / "mine").mkdir()
    with pytest.raises(DatasetError, match=r"--data .*mine is a folder: give the dataset YAML file; it holds no "
                                           r"\.yaml file"):
        check_dataset(tmp_path / "mine")
    (tmp_path / "mine" / "data.yaml").write_text("names: [a]\n")
    with pytest.raises(DatasetError) as e:
        check_dataset(tmp_path / "mine")
    assert str(e.value) == (f"--data {tmp_path / 'mine'} is a folder: give the dataset YAML file; it holds "
                            f"{tmp_path / 'mine' / 'data.yaml'}")
