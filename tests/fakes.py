"""Stand-ins: a model with the YOLOv5 anchor head (only the head geometry the loss strategies read), a
train.py for compare's tests (``use_fake_trainer``), and an exported ONNX file whose metadata lies
(``onnx_with_metadata``)."""
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from models.geometry import PriorGenerator, YOLOBoxCoder


def fake_model(nc: int, anchors_grid: torch.Tensor, strides=(8, 16, 32)) -> SimpleNamespace:
    """``model.model[-1]`` has ``nc``, ``nl``, ``na``, ``anchors`` (nl, na, 2) grid units, ``stride``,
    ``box_coder`` and ``prior_generator()``, like :class:`models.yolo.Detect`."""
    stride = torch.tensor(strides, dtype=torch.float32)
    head = SimpleNamespace(nc=nc, nl=len(strides), na=anchors_grid.shape[1], anchors=anchors_grid, stride=stride,
                           box_coder=YOLOBoxCoder(), prior_generator=lambda: PriorGenerator(stride, anchors_grid))
    return SimpleNamespace(model=[head], head_kind="anchor")


FAKE_TRAIN = Path(__file__).with_name("fake_train.py")


def use_fake_trainer(monkeypatch, tmp_path: Path, maps: dict[str, float], fail: str = "", fail_after: str = "") -> None:
    """Make compare launch ``tests/fake_train.py`` in place of train.py: each (strategy, seed) run ends at
    once with the mAP50-95 ``maps["loss-sSEED"]``; runs named in ``fail`` (comma-separated) exit 1 with no
    summary.json, those in ``fail_after`` exit 2 after writing it."""
    from utils.compare import driver, pack

    table = tmp_path / "fake_maps.json"
    table.write_text(json.dumps(maps))
    monkeypatch.setenv("FAKE_MAPS", str(table))
    monkeypatch.setenv("FAKE_FAIL", fail)
    monkeypatch.setenv("FAKE_FAIL_AFTER", fail_after)
    real = driver.job_command

    def command(job, train_args, workers):
        cmd = real(job, train_args, workers)
        return [cmd[0], str(FAKE_TRAIN), *cmd[2:]]

    monkeypatch.setattr(driver, "job_command", command)
    monkeypatch.setattr(pack, "POLL_S", 0.05)  # runs this short need no half-second polls


def onnx_with_metadata(src: Path, dst: Path, **changes: str) -> Path:
    """A copy of the ONNX file ``src`` at ``dst`` with the metadata entries named in ``changes`` rewritten."""
    import onnx

    proto = onnx.load(str(src))
    for entry in proto.metadata_props:
        if entry.key in changes:
            entry.value = changes[entry.key]
    onnx.save(proto, str(dst))
    return dst
