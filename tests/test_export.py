"""export.py: ONNX / TorchScript of both heads equal PyTorch's output; metadata; detect.py on .onnx; bad input."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
import export as export_cli
from models.yolo import Model
from utils.io.checkpoint import make_checkpoint, save_checkpoint
from utils.io.export import ExportError, export

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install -r requirements-export.txt")
onnx = pytest.importorskip("onnx", reason="onnx not installed: pip install -r requirements-export.txt")

# strides 4 and 8, anchors sized for 64 px images: outputs stay below ~256 px, where float32 rounding
# (1.5e-5 at 128) leaves the 1e-4 tolerance meaningful
TINY = {"nc": 2, "depth_multiple": 0.33, "width_multiple": 0.125,
        "anchors": [[4, 5, 8, 10, 12, 6], [16, 12, 20, 24, 30, 20]],
        "backbone": [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "C3", [128]],
                     [-1, 1, "Conv", [256, 3, 2]], [-1, 1, "SPPF", [256, 5]]],
        "head": [[[2, 4], 1, "Detect", ["nc", "anchors"]]]}


def tiny_checkpoint(path: Path, head: str, imgsz: int = 64) -> tuple[Model, Path]:
    """A tiny model with random BatchNorm statistics and head weights (so that folding BN and the decode
    are exercised on varied values), saved as our checkpoint recording ``imgsz``."""
    torch.manual_seed(0)
    model = Model(TINY, head=head)
    model.names = ["cat", "dog"]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        for conv in model.head.m:
            conv.weight.normal_(0, 0.3)
            conv.bias.uniform_(-2, 2)
    return model.eval(), save_checkpoint(make_checkpoint(model, opt={"imgsz": imgsz}), path)


def ort_run(file: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("head", ["anchor", "dfl"])
def test_onnx_and_torchscript_equal_pytorch(head: str, tmp_path: Path):
    model, weights = tiny_checkpoint(tmp_path / "best.pt", head)
    files = export(weights, ["onnx", "torchscript"], dynamic=False)
    assert files == [tmp_path / "best.onnx", tmp_path / "best.torchscript"]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)[0].numpy()  # (1, N, 5 + nc)
    assert ref.shape == (1, (256 + 64) * (3 if head == "anchor" else 1), 7)
    out = ort_run(files[0], x)
    assert out.shape == ref.shape and np.abs(out - ref).max() <= 1e-4
    assert ref[..., 5:].std() > 1e-3  # class scores vary: the comparison is not between constants

    meta = {p.key: p.value for p in onnx.load(str(files[0])).metadata_props}
    assert json.loads(meta["names"]) == ["cat", "dog"] and json.loads(meta["stride"]) == [4, 8]
    assert json.loads(meta["imgsz"]) == [64, 64] and meta["head"] == head and meta["dynamic"] == "false"

    extra = {"config.txt": ""}
    traced = torch.jit.load(str(files[1]), _extra_files=extra)
    with torch.no_grad():
        assert np.abs(traced(x).numpy() - ref).max() <= 1e-4
    assert json.loads(extra["config.txt"]) == meta


@pytest.mark.parametrize("head", ["anchor", "dfl"])
def test_dynamic_onnx_other_sizes(head: str, tmp_path: Path):
    model, weights = tiny_checkpoint(tmp_path / "w.pt", head)
    (file,) = export(weights, ["onnx"], imgsz=[32, 32], dynamic=True)
    x = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)[0].numpy()
    out = ort_run(file, x)
    na = 3 if head == "anchor" else 1
    assert out.shape == (2, na * (24 * 16 + 12 * 8), 7) and np.abs(out - ref).max() <= 1e-4


def test_detect_runs_onnx_like_pt(tmp_path: Path):
    _, weights = tiny_checkpoint(tmp_path / "w.pt", "dfl")
    export(weights, ["onnx"], dynamic=True)
    for name, (h, w) in (("a.jpg", (48, 64)), ("b.png", (40, 40))):
        cv2.imwrite(str(tmp_path / name), np.random.default_rng(len(name) + h).integers(0, 255, (h, w, 3), np.uint8))
    # fp32: the ONNX session computes in float32 (auto is bf16 on CPUs that have it)
    kw = dict(source=str(tmp_path / "*.*g"), imgsz=[64], conf_thres=0.0, max_det=5, device="cpu", save_txt=True,
              save_conf=True, nosave=True, project=tmp_path / "runs", precision="fp32")
    pt_dir = detect.run(weights=weights, **kw)
    onnx_dir = detect.run(weights=tmp_path / "w.onnx", **kw)
    for stem in ("a", "b"):
        pt_rows, onnx_rows = (np.loadtxt(d / "labels" / f"{stem}.txt", ndmin=2) for d in (pt_dir, onnx_dir))
        assert pt_rows.shape == (5, 6)
        np.testing.assert_allclose(onnx_rows, pt_rows, atol=2e-5)  # cls x y w h conf, %g-rounded


def test_export_cli_defaults_to_dynamic_axes():
    assert export_cli.parse_opt(["--weights", "w.pt"]).static is False  # dynamic: detect pads as for the .pt
    assert export_cli.parse_opt(["--weights", "w.pt", "--static"]).static is True
    assert export_cli.parse_opt(["--weights", "w.pt", "--dynamic"]).static is False


def test_static_onnx_runs_at_its_size(tmp_path: Path, capsys):
    _, weights = tiny_checkpoint(tmp_path / "w.pt", "anchor", imgsz=32)
    (file,) = export(weights, ["onnx"], dynamic=False)  # 32 px from the checkpoint
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((40, 64, 3), 128, np.uint8))
    detect.run(weights=file, source=str(tmp_path / "a.jpg"), imgsz=[96], device="cpu", nosave=True,
               project=tmp_path / "runs")
    assert "32x32 " in capsys.readouterr().out  # letterboxed to the exported square, not 96 or 64x40


def test_export_bad_input(tmp_path: Path, capsys, caplog, monkeypatch):
    with pytest.raises(SystemExit) as e:
        export_cli.parse_opt(["--weights", "w.pt", "--include", "onnx", "tflite"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "tflite" in err and "onnx" in err and "torchscript" in err
    _, weights = tiny_checkpoint(tmp_path / "w.pt", "anchor")
    with pytest.raises(ExportError, match="--include tflite: unknown format; choose from onnx, torchscript"):
        export(weights, ["tflite"])
    with caplog.at_level(logging.ERROR):
        assert export_cli.main(export_cli.parse_opt(["--weights", str(weights), "--half"])) == 1
    assert caplog.messages[-1].startswith("error: --half needs a CUDA --device")
    with caplog.at_level(logging.ERROR):
        assert export_cli.main(export_cli.parse_opt(["--weights", str(weights), "--img", "60"])) == 1
    assert caplog.messages[-1] == "error: --img [60, 60] must be multiples of the model's largest stride 8"
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(ExportError, match=r"pip install -r requirements-export.txt"):
        export(weights, ["onnx"])
    assert not (tmp_path / "w.onnx").exists()


def test_failed_export_keeps_the_earlier_file(tmp_path: Path, monkeypatch):
    _, weights = tiny_checkpoint(tmp_path / "w.pt", "anchor")
    (file,) = export(weights, ["onnx"])
    good = file.read_bytes()

    def broken_check(proto):
        raise onnx.checker.ValidationError("broken on purpose")

    monkeypatch.setattr(onnx.checker, "check_model", broken_check)
    with pytest.raises(onnx.checker.ValidationError):
        export(weights, ["onnx"], imgsz=[32, 32])
    assert file.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["w.onnx", "w.pt"]


def test_onnx_given_to_val_and_train(tmp_path: Path, tiny_data, caplog):
    import train
    import val

    _, weights = tiny_checkpoint(tmp_path / "w.pt", "anchor")
    (file,) = export(weights, ["onnx"])
    with caplog.at_level(logging.ERROR):
        assert val.main(val.parse_opt(["--weights", str(file), "--data", str(tiny_data)])) == 1
        assert train.main(train.parse_opt(["--weights", str(file), "--data", str(tiny_data), "--epochs", "1",
                                           "--project", str(tmp_path / "runs")])) == 1
    expected = f"error: '{file}' is an exported model, not a checkpoint: give a .pt here (.onnx files run with detect.py)"
    assert caplog.messages[-2:] == [expected, expected]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy ONNX exporter, used on purpose
def test_onnx_backend_bad_input(tmp_path: Path, monkeypatch):
    from utils.io.onnx_backend import OnnxModel

    plain = tmp_path / "plain.onnx"  # an ONNX file from elsewhere: no names, stride, imgsz, head
    torch.onnx.export(torch.nn.Conv2d(3, 4, 1), (torch.zeros(1, 3, 8, 8),), str(plain), dynamo=False)
    with pytest.raises(ValueError, match=r"plain.onnx lacks the metadata names, stride, imgsz, head; export it"):
        OnnxModel(plain)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"junk.onnx: onnxruntime cannot load it"):
        OnnxModel(tmp_path / "junk.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ValueError, match=r"needs onnxruntime: pip install -r requirements-export.txt"):
        OnnxModel(plain)
