"""YOLOv5 YAML schema -> nn.Sequential of blocks, through a plain name -> class dict (no eval).

Each YAML row is ``[from, number, module, args]``. ``from`` is -1 (previous layer), a layer
index, or a list of them; ``number`` is the repeat count before the depth multiple. Channel
counts are scaled by ``width_multiple`` and rounded up to a multiple of 8 exactly as YOLOv5.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from models.common import C3, SPPF, Bottleneck, Concat, Conv

# Blocks a YAML row may name. The detection head is not listed: its row ("Detect") is
# replaced by the head class the Model was asked for (see models.yolo.HEADS).
BLOCKS: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "Bottleneck": Bottleneck,
    "C3": C3,
    "SPPF": SPPF,
    "Concat": Concat,
    "nn.Upsample": nn.Upsample,
    "Upsample": nn.Upsample,
}
HEAD_ROW_NAMES = {"Detect"}
_CONV_LIKE = (Conv, Bottleneck, C3, SPPF)
_REPEAT_INSIDE = (C3,)  # these take the repeat count as their 3rd argument


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= x (YOLOv5 channel rounding)."""
    return int(math.ceil(x / divisor) * divisor)


def _resolve_args(args: list[Any], symbols: dict[str, Any]) -> list[Any]:
    """Replace the YAML names 'nc', 'anchors', 'None' by their values; other strings stay."""
    return [symbols[a] if isinstance(a, str) and a in symbols else a for a in args]


def _block_class(name: str, i: int, yaml_file: str,
                 head_cls: type[nn.Module]) -> type[nn.Module]:
    if name in HEAD_ROW_NAMES or name == head_cls.__name__:
        return head_cls
    if name not in BLOCKS:
        choices = ", ".join(sorted(BLOCKS) + sorted(HEAD_ROW_NAMES))
        raise ValueError(f"unknown block '{name}' in layer {i} of {yaml_file}; choose from {choices}")
    return BLOCKS[name]


def _rows(d: dict[str, Any], ch: int, head_cls: type[nn.Module], yaml_file: str):
    """Each YAML row resolved: (i, from, class, constructor args, repeats, output channels). The
    repeat count is already folded into the args of a block that repeats inside (C3)."""
    nc, gd, gw = d["nc"], d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    anchors = d["anchors"]
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    symbols = {"nc": nc, "anchors": anchors, "None": None}
    chs = [ch]
    for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
        cls = _block_class(str(name), i, yaml_file, head_cls)
        args = _resolve_args(list(args), symbols)
        n = max(round(n * gd), 1) if n > 1 else n
        if cls in _CONV_LIKE:
            c1, c2 = chs[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if cls in _REPEAT_INSIDE:
                args.insert(2, n)
                n = 1
        elif cls is Concat:
            c2 = sum(chs[x] for x in f)
        elif cls is head_cls:
            args.append([chs[x] for x in f])
            if isinstance(args[1], int):  # anchors given as a count: placeholders until autoanchor
                args[1] = [list(range(args[1] * 2))] * len(f)
            c2 = 0
        else:
            c2 = chs[f]
        yield i, f, cls, args, n, c2
        if i == 0:
            chs = []
        chs.append(c2)


def _build(cls: type[nn.Module], args: list[Any], n: int) -> nn.Module:
    return nn.Sequential(*(cls(*args) for _ in range(n))) if n > 1 else cls(*args)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_yaml_params(d: dict[str, Any], ch: int, head_cls: type[nn.Module], yaml_file: str = "<dict>") -> int:
    """Parameters of the model ``d`` describes, counted without allocating it: each row is built on
    the meta device once and twice repeated (a block's parameters grow linearly with its repeats)."""
    total = 0
    with torch.device("meta"):
        for _, _, cls, args, n, _ in _rows(d, ch, head_cls, yaml_file):
            inside = cls in _REPEAT_INSIDE  # C3: the repeat count is its 3rd argument

            def params(k: int) -> int:
                return _n_params(_build(cls, [*args[:2], k, *args[3:]], 1) if inside else _build(cls, args, k))

            reps, one = (args[2] if inside else n), params(1)
            total += one + (reps - 1) * (params(2) - one) if reps > 1 else one
    return total


def parse_model(d: dict[str, Any], ch: int, head_cls: type[nn.Module],
                yaml_file: str = "<dict>") -> tuple[nn.Sequential, list[int]]:
    """Build the layers described by the YOLOv5 model dict ``d``.

    Args:
        d: model dict (nc, depth_multiple, width_multiple, anchors, backbone, head).
        ch: input image channels.
        head_cls: class that replaces the ``Detect`` row; called as ``head_cls(nc, anchors, ch_list)``.
        yaml_file: name used in error messages.
    Returns:
        (layers, save): every layer carries ``.i`` (index), ``.f`` (from), ``.type``, ``.np``;
        ``save`` lists the layer indices whose outputs later layers read.
    """
    layers: list[nn.Module] = []
    save: list[int] = []
    for i, f, cls, args, n, _ in _rows(d, ch, head_cls, yaml_file):
        module = _build(cls, args, n)
        module.i, module.f = i, f
        module.type = f"{cls.__module__}.{cls.__qualname__}"
        module.np = _n_params(module)
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
    return nn.Sequential(*layers), sorted(set(save))
