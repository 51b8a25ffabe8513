"""Checkpoints: plain-data roundtrip, atomic writes, official YOLOv5 import, unsafe/bad files."""
import copy
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from models.yolo import Model
from utils.io.checkpoint import (CheckpointError, load_checkpoint, make_checkpoint, read_checkpoint,
                              save_checkpoint)

SHARED = Path(__file__).resolve().parents[2] / "shared"
OFFICIAL = SHARED / "checkpoints" / "yolov5n-bccd-official.pt"
MODELS = Path(__file__).resolve().parents[1] / "models"
NAMES = ["RBC", "WBC", "Platelets"]


@pytest.fixture(scope="module")
def model() -> Model:
    torch.manual_seed(0)
    m = Model(MODELS / "yolov5n.yaml", nc=3)
    m.names = list(NAMES)
    return m


@pytest.fixture(scope="module")
def saved(model: Model, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Model]:
    """A checkpoint with an optimizer and EMA weights that differ from the model's."""
    ema = SimpleNamespace(ema=copy.deepcopy(model), updates=7)
    with torch.no_grad():
        for p in ema.ema.parameters():
            p.mul_(0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.rand(1, 3, 64, 64))[0].sum().backward()
    optimizer.step()
    opt = {"img": 320, "save_dir": Path("runs/train/exp")}
    ckpt = make_checkpoint(model, ema=ema, optimizer=optimizer, epoch=4, best_fitness=0.25,
                           hyp={"lr0": 0.01, "loss": "yolov5"}, opt=opt)
    path = save_checkpoint(ckpt, tmp_path_factory.mktemp("ckpt") / "last.pt")
    return path, ema.ema


def test_roundtrip_plain_data(saved: tuple[Path, Model]) -> None:
    path, ema_model = saved
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert raw.keys() == read_checkpoint(path).keys() and raw["format"] == "yolo-lab-checkpoint"
    assert raw["epoch"] == 4 and raw["updates"] == 7 and raw["opt"]["save_dir"] == "runs/train/exp"
    assert raw["optimizer"]["state"] and all(v.dtype == torch.float32 for v in raw["ema"].values()
                                             if v.is_floating_point())
    loaded, meta = load_checkpoint(path)
    assert not loaded.training and next(loaded.parameters()).dtype == torch.float32
    assert meta["format"] == "ours" and meta["names"] == NAMES and meta["head"] == "anchor"
    assert meta["epoch"] == 4 and meta["hyp"]["loss"] == "yolov5" and meta["yaml"]["nc"] == 3
    for k, v in ema_model.state_dict().items():  # EMA weights preferred over model weights
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[0], ema_model.eval()(x)[0], atol=1e-6)


def test_atomic_write_leaves_no_temp_file(model: Model, tmp_path: Path) -> None:
    path = save_checkpoint(make_checkpoint(model), tmp_path / "best.pt")
    assert sorted(os.listdir(tmp_path)) == ["best.pt"]
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint({"unpicklable": lambda: None}, path)
    assert sorted(os.listdir(tmp_path)) == ["best.pt"] and path.read_bytes() == before


def test_official_checkpoint_loads_strict() -> None:
    if not OFFICIAL.is_file():
        pytest.skip(f"official checkpoint {OFFICIAL} absent (needs ../shared next to the repo)")
    loaded, meta = load_checkpoint(OFFICIAL)
    assert meta["format"] == "yolov5-official" and meta["head"] == "anchor"
    assert loaded.nc == 3 and meta["names"] == NAMES and loaded.names == NAMES
    assert meta["hyp"]["lr0"] == 0.01 and meta["yaml"]["depth_multiple"] == 0.33
    assert next(loaded.parameters()).dtype == torch.float32 and not loaded.training
    torch.manual_seed(0)
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        decoded, raw = loaded(x)
    assert decoded.shape == (1, 6300, 8) and torch.isfinite(decoded).all()
    anchors_px = loaded.model[-1].anchors * loaded.stride.view(-1, 1, 1)
    assert anchors_px.min() > 5 and anchors_px.max() < 640  # autoanchor-tuned, still in pixels range
    with pytest.raises(CheckpointError, match="not a checkpoint written by this project"):
        read_checkpoint(OFFICIAL)


class _Evil:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple:
        return self.func, (self.arg,)


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
def test_malicious_pickle_is_refused(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    if kind == "os.system":
        evil, expect = _Evil(os.system, f"touch {marker}"), r"global '(posix|nt|os)\.system'"
    else:
        evil, expect = _Evil(eval, f"open({str(marker)!r}, 'w').close()"), r"global 'builtins\.eval'"
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 0, "model": evil}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match=r"refusing to load 'evil.pt': it asks for " + expect):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert not marker.exists()


def test_truncated_file(saved: tuple[Path, Model], tmp_path: Path) -> None:
    data = saved[0].read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(bad)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nope\.pt' not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_shape_mismatch_names_key(model: Model, tmp_path: Path) -> None:
    ckpt = make_checkpoint(model)
    ckpt["model"]["model.24.m.0.weight"] = torch.zeros(255, 64, 1, 1)
    path = save_checkpoint(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"'model\.24\.m\.0\.weight' has shape \(255, 64, 1, 1\), "
                                              r"model expects \(24, 64, 1, 1\)"):
        load_checkpoint(path)


def test_head_mismatch(saved: tuple[Path, Model]) -> None:
    with pytest.raises(CheckpointError, match="holds head 'anchor' but head 'dfl' was requested"):
        load_checkpoint(saved[0], head="dfl")
    assert load_checkpoint(saved[0], head="anchor")[1]["head"] == "anchor"


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoint_file_mode_follows_umask(model: Model, tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        path = save_checkpoint(make_checkpoint(model), tmp_path / "w.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
