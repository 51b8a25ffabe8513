"""YOLOv5 v7.0 detection model: the anchor-based ``Detect`` head and the YAML-built ``Model``.

Head contract (what ``Model`` needs from any class registered in ``HEADS``):
    * constructor ``cls(nc, anchors, ch)``: ``anchors`` is the YAML value (per-level lists of
      pixel w,h pairs), ``ch`` the input channels of each level;
    * attributes ``nc``, ``no``, ``nl`` and ``stride`` (Tensor[nl]);
    * ``initialize(stride)``: called once with the per-level strides, sets ``stride`` and
      whatever depends on it (anchor units, bias priors);
    * ``forward(list of (B, C_i, H_i, W_i))``: training -> list of raw level outputs;
      eval -> ``(decoded (B, N, 4 + 1 + nc), raw list)`` with xywh in input pixels;
    * ``decode(raw list) -> (B, N, no)``;
    * ``box_coder`` and ``prior_generator()`` (models/geometry.py): the geometry the loss
      strategies train with, the same the decode uses.
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.common import Conv
from models.dfl_head import DFLDetect
from models.fuse import fuse_conv_and_bn
from models.geometry import PriorGenerator, YOLOBoxCoder, cell_grid, float_under_autocast, head_conv
from models.parse import count_yaml_params, parse_model, validate_model_dict
from models.summary import count_params, gflops
from utils.core.yaml_file import load_yaml

LOGGER = logging.getLogger(__name__)
# Larger than any YOLO model (yolov5x6: 140M); checked from the YAML before a byte is allocated.
MAX_MODEL_PARAMS = 300_000_000
STRIDE_PROBE = 256  # image side used to measure the strides, as YOLOv5


class Detect(nn.Module):
    """YOLOv5 v6/v7 anchor head: one 1x1 conv per level predicting na * (5 + nc) channels.

    ``anchors`` (buffer, Tensor[nl, na, 2]) holds anchor w,h in grid units (pixels / stride)
    once ``initialize`` has run; it is saved in the state_dict as ``model.24.anchors``.
    """

    def __init__(self, nc: int = 80, anchors: list[list[float]] | tuple = (), ch: list[int] = ()) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5  # x, y, w, h, obj, classes
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.box_coder = YOLOBoxCoder()
        self._grids: dict[tuple, torch.Tensor] = {}

    def prior_generator(self) -> PriorGenerator:
        """The priors of this head (a copy of its strides and current anchors)."""
        return PriorGenerator(self.stride, self.anchors)

    @torch.no_grad()
    def initialize(self, stride: torch.Tensor) -> None:
        """Set strides, put pixel anchors in stride order and grid units, init biases."""
        self.stride = stride.to(self.anchors.device, torch.float32)
        self._check_anchor_order()
        self.anchors /= self.stride.view(-1, 1, 1)
        self._initialize_biases()

    def _check_anchor_order(self) -> None:
        """Flip the levels when mean anchor area grows the opposite way to the stride."""
        area = self.anchors.prod(-1).mean(-1).view(-1)  # (nl,)
        da, ds = area[-1] - area[0], self.stride[-1] - self.stride[0]
        if da and (da.sign() != ds.sign()):
            LOGGER.info("reversing anchor order to match stride order")
            self.anchors[:] = self.anchors.flip(0)

    def _initialize_biases(self) -> None:
        """YOLOv5 priors: ~8 objects per 640 image per level, class probability ~0.6 / nc."""
        for mi, s in zip(self.m, self.stride.tolist()):
            b = mi.bias.view(self.na, -1)  # (na, no)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - 0.99))

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """x: list of nl feature maps (B, C_i, ny, nx) -> list of (B, na, ny, nx, no) logits,
        plus, in eval mode, the decoded (B, N, no) in front (see ``decode``)."""
        raw = []
        for i, xi in enumerate(x):
            y = head_conv(self.m[i], xi)
            bs, _, ny, nx = y.shape
            raw.append(y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        raw = float_under_autocast(raw)
        return self.decode(raw), raw

    def _grid(self, nx: int, ny: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Cell corners (1, 1, ny, nx, 2) as (x, y), cached per size, device and dtype."""
        key = (nx, ny, device, dtype)
        if key not in self._grids:
            self._grids[key] = cell_grid(ny, nx, device, dtype).view(1, 1, ny, nx, 2)
        return self._grids[key]

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """raw: list of (B, na, ny, nx, no) logits -> (B, N, no), N = sum na * ny * nx.

        Columns: x, y, w, h in input-image pixels (:class:`models.geometry.YOLOBoxCoder`), then
        objectness and class probabilities (sigmoid). Rows are ordered level, anchor, y, x.
        """
        out = []
        for i, r in enumerate(raw):
            bs, na, ny, nx, no = r.shape
            grid = self._grid(nx, ny, r.device, r.dtype)
            stride = self.stride[i].to(r.device, r.dtype)
            anchor_px = (self.anchors[i] * stride).to(r.dtype).view(1, na, 1, 1, 2)
            xywh = self.box_coder.decode(r[..., :4], anchor_px, grid, stride)
            out.append(torch.cat((xywh, r[..., 4:].sigmoid()), -1).view(bs, -1, no))
        return torch.cat(out, 1)


HEADS: dict[str, type[nn.Module]] = {"anchor": Detect, "dfl": DFLDetect}


def _head_class(head: str | None) -> tuple[str, type[nn.Module]]:
    kind = "anchor" if head is None else head
    if kind not in HEADS:
        raise ValueError(f"unknown head '{kind}'; choose from {', '.join(sorted(HEADS))}")
    return kind, HEADS[kind]


def load_model_yaml(cfg: str | Path | dict) -> tuple[dict[str, Any], str]:
    """(model dict deep-copied, name for messages) from a YAML path or a dict."""
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg), str(cfg.get("yaml_file", "<dict>"))
    path = Path(cfg)
    if not path.is_file():
        local = Path(__file__).parent / path.name
        if not local.is_file():
            raise FileNotFoundError(f"model config '{cfg}' not found")
        path = local
    d = load_yaml(path)
    if not isinstance(d, dict) or "backbone" not in d or "head" not in d:
        raise ValueError(f"{path} is not a YOLOv5 model YAML (needs backbone and head)")
    d["yaml_file"] = path.name
    return d, path.name


class Model(nn.Module):
    """YOLOv5 detection model built from a YAML config.

    Input: images (B, ch, H, W), H and W multiples of the largest stride.
    Output: training -> list of per-level raw tensors, (B, na, ny, nx, no) for the anchor
    head; eval -> (decoded (B, N, no) xywh pixels + obj + class probabilities, raw list).
    """

    def __init__(self, cfg: str | Path | dict = "yolov5s.yaml", ch: int = 3, nc: int | None = None,
                 head: str | None = None) -> None:
        super().__init__()
        self.yaml, yaml_name = load_model_yaml(cfg)
        self.head_kind, head_cls = _head_class(head)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc is not None and nc != self.yaml["nc"]:
            LOGGER.info("overriding %s nc=%s with nc=%s", yaml_name, self.yaml["nc"], nc)
            self.yaml["nc"] = nc
        validate_model_dict(self.yaml, yaml_name, head_cls)
        n_params = count_yaml_params(self.yaml, ch, head_cls, yaml_name)
        if n_params > MAX_MODEL_PARAMS:
            raise ValueError(f"{yaml_name} describes a model of {n_params / 1e6:.0f}M parameters, more than the "
                             f"limit of {MAX_MODEL_PARAMS / 1e6:.0f}M (width_multiple "
                             f"{self.yaml.get('width_multiple', 1.0)}, depth_multiple {self.yaml.get('depth_multiple', 1.0)})")
        self.model, self.save = parse_model(self.yaml, ch, head_cls, yaml_name)
        self.nc: int = self.yaml["nc"]
        self.names = [str(i) for i in range(self.nc)]
        head_module = self.model[-1]
        self.register_buffer("stride", self._measure_strides(ch), persistent=False)
        head_module.initialize(self.stride.clone())

    @torch.no_grad()
    def _measure_strides(self, ch: int) -> torch.Tensor:
        was_training = self.training
        self.eval()
        p = next(self.parameters())
        feats = self._features(torch.zeros(1, ch, STRIDE_PROBE, STRIDE_PROBE, device=p.device))
        self.train(was_training)
        return torch.tensor([STRIDE_PROBE / f.shape[-2] for f in feats], dtype=torch.float32)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run every layer but the head; return the head's inputs [(B, C_i, H_i, W_i), ...]."""
        y: list[torch.Tensor | None] = []
        for m in self.model[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        f = self.model[-1].f
        return [x if j == -1 else y[j] for j in (f if isinstance(f, list) else [f])]

    @property
    def head(self) -> nn.Module:
        """The detection head (the last layer)."""
        return self.model[-1]

    def forward(self, x: torch.Tensor) -> Any:
        return self.model[-1](self._features(x))

    def fuse(self) -> "Model":
        """Fold every Conv block's BatchNorm into its convolution (inference only)."""
        for m in self.model.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        LOGGER.info("fused Conv + BatchNorm layers")
        return self

    def info(self, img_size: int = 640) -> tuple[int, int, int, float]:
        """Log and return (n_layers, n_params, n_grads, GFLOPs at img_size).

        GFLOPs = 2 * convolution MACs for one image, the figure thop/YOLOv5 print.
        """
        n_layers = len(list(self.modules()))
        n_p, n_g = count_params(self)
        max_stride = max(int(self.stride.max()), 32)
        g = gflops(self, img_size, self.yaml["ch"], stride=max_stride)
        LOGGER.info("model summary: %d layers, %d parameters, %d gradients, %.3g GFLOPs at %d px",
                    n_layers, n_p, n_g, g, img_size)
        return n_layers, n_p, n_g, g
