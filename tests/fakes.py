"""A stand-in for a model with the YOLOv5 anchor head: only the head geometry the loss strategies read."""
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
