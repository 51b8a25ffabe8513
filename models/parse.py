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
from utils.core.text import short_repr

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
MAX_REPEATS = 1000  # repeats of one row after depth_multiple (yolov5x's largest: 12)
MAX_CHANNELS = 65536  # output channels of one block after width_multiple (yolov5x's largest: 1280)


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= x (YOLOv5 channel rounding)."""
    return int(math.ceil(x / divisor) * divisor)


class ModelYamlError(ValueError):
    """A model YAML that does not fit the schema; the message names the file, the layer and the field."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf


def validate_model_dict(d: dict[str, Any], yaml_file: str, head_cls: type[nn.Module]) -> None:
    """Check the model dict once against the schema :func:`parse_model` reads, before anything is built.

    ``nc`` a positive integer; ``depth_multiple`` / ``width_multiple`` positive numbers; ``anchors`` rows of
    w, h pixel pairs, as many per row, or a count; ``backbone`` and ``head`` non-empty lists of
    ``[from, number, module, args]`` rows whose ``from`` names earlier layers (-1: the previous one),
    ``number`` a positive integer, ``module`` a known block, conv-like blocks with positive channels,
    kernel and stride; the last row, and only it, the detection head, reading one level per anchors row.
    ModelYamlError naming ``yaml_file``, the layer and the field otherwise.
    """
    def fail(where: str, what: str) -> None:
        raise ModelYamlError(f"{yaml_file}: {where}{what}")

    if not _is_int(d.get("nc")) or d["nc"] < 1:
        fail("", f"'nc' must be a positive integer, got {short_repr(d.get('nc'))}")
    for key in ("depth_multiple", "width_multiple"):
        if not _is_positive_number(d.get(key, 1.0)):
            fail("", f"'{key}' must be a positive number, got {short_repr(d.get(key))}")
    _check_anchors(d.get("anchors"), "'anchors'", fail)
    for key in ("backbone", "head"):
        if not isinstance(d.get(key), list) or not d[key]:
            fail("", f"'{key}' must be a non-empty list of [from, number, module, args] rows, got "
                     f"{short_repr(d.get(key))}")
    rows = d["backbone"] + d["head"]
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 4:
            fail(f"layer {i}: ", f"expected a row [from, number, module, args], got {short_repr(row)}")
        f, n, name, args = row
        if not isinstance(name, str):
            fail(f"layer {i}: ", f"'module' must be a block name, got {short_repr(name)}")
        where = f"layer {i} ({name}): "
        cls = _block_class(name, i, yaml_file, head_cls)
        _check_from(f, i, where, fail)
        if not isinstance(args, list):
            fail(where, f"'args' must be a list, got {short_repr(args)}")
        if (cls is head_cls) != (i == len(rows) - 1):
            fail(where, f"the detection head ({', '.join(sorted(HEAD_ROW_NAMES))}) must be the last row, and only it")
        _check_row(cls, f, n, args, d, where, fail, head_cls)


def _check_anchors(anchors: Any, what: str, fail: Any) -> int | None:
    """The number of levels ``anchors`` gives (None for a count of anchors per level)."""
    if _is_int(anchors) and anchors >= 1:
        return None
    if not isinstance(anchors, list) or not anchors:
        fail("", f"{what} must be a list of rows of w, h pixel pairs (one row per level), or a count, got "
                 f"{short_repr(anchors)}")
    for k, row in enumerate(anchors):
        if not isinstance(row, list) or not row or len(row) % 2 or not all(map(_is_positive_number, row)):
            fail("", f"{what} row {k} must be w, h pairs of positive numbers, got {short_repr(row)}")
    if len({len(row) for row in anchors}) > 1:
        fail("", f"{what} rows must all give the same number of pairs (anchors per level), got "
                 f"{[len(row) // 2 for row in anchors]}")
    return len(anchors)


def _check_from(f: Any, i: int, where: str, fail: Any) -> None:
    """``from``: -1 (the previous layer, the image for layer 0), an earlier layer, or a list of them."""
    for x in f if isinstance(f, list) and f else [f]:
        if not _is_int(x) or not (x == -1 if i == 0 else -i <= x < i):
            allowed = "-1 (the image)" if i == 0 else f"an earlier layer: 0..{i - 1}, or -{i}..-1 counting back"
            fail(where, f"'from' {short_repr(f)} must be {allowed}, or a list of those")


def _check_row(cls: type[nn.Module], f: Any, n: Any, args: list[Any], d: dict[str, Any], where: str,
               fail: Any, head_cls: type[nn.Module]) -> None:
    """``number`` and the arguments of one row (its ``from`` and ``module`` are checked)."""
    if not _is_int(n) or n < 1:
        fail(where, f"'number' (repeats) must be a positive integer, got {short_repr(n)}")
    repeats = n * d.get("depth_multiple", 1.0)
    if n > 1 and repeats > MAX_REPEATS:
        fail(where, f"'number' {n} x depth_multiple {d.get('depth_multiple')} = {repeats:.3g} repeats; at most "
                    f"{MAX_REPEATS}")
    if cls in _CONV_LIKE:
        c2 = args[0] if args else None
        if not _is_int(c2) or c2 < 1:
            fail(where, f"'args'[0] (output channels) must be a positive integer, got {short_repr(c2)}")
        if c2 * d.get("width_multiple", 1.0) > MAX_CHANNELS:
            fail(where, f"'args'[0] {c2} x width_multiple {d.get('width_multiple')} channels; at most {MAX_CHANNELS}")
        sizes = args[1:3] if cls is Conv else args[1:2] if cls is SPPF else []
        for k, v in enumerate(sizes, 1):
            if not _is_int(v) or v < 1:
                fail(where, f"'args'[{k}] ({('kernel', 'stride')[k - 1]}) must be a positive integer, got "
                            f"{short_repr(v)}")
    elif cls is Concat and not isinstance(f, list):
        fail(where, f"'from' must list the layers to concatenate, got {short_repr(f)}")
    elif cls is head_cls:
        if not isinstance(f, list) or len(args) < 2:
            fail(where, "expected 'from' to list the levels it reads and 'args' [nc, anchors]")
        anchors = d.get("anchors") if args[1] == "anchors" else args[1]
        levels = _check_anchors(anchors, "'anchors'" if args[1] == "anchors" else f"{where}'args'[1]", fail)
        if levels is not None and levels != len(f):
            fail(where, f"'from' reads {len(f)} levels, but 'anchors' has {levels} rows (one per level)")


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
