"""Export a checkpoint to ONNX or TorchScript, with the metadata inference needs stored in the file.

Every exported model maps ``images (B, 3, H, W)`` float 0..1 to the decoded
``output0 (B, N, 5 + nc)``: x, y, w, h in input pixels, objectness, class probabilities (the
``dfl`` head writes objectness 1.0) -- the tensor an eval-mode ``Model`` returns first, so NMS and
detect.py stay head-agnostic. The metadata (ONNX ``metadata_props``, TorchScript extra file
``config.txt``) are strings: ``names`` (JSON list), ``stride`` (JSON list, per level), ``imgsz``
(JSON [h, w]), ``head`` (anchor | dfl), ``dynamic`` and ``half`` (true | false).
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from utils.core.errors import UserError

LOGGER = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}
INSTALL_HINT = "pip install -r requirements-export.txt (onnx, onnxruntime)"
OPSET = 17
MIN_OPSET = 11  # ONNX Resize reproduces PyTorch's nearest upsampling from opset 11 on


class ExportError(UserError):
    """An export that cannot be made as asked (format, precision, missing optional package)."""


class DecodedOutput(nn.Module):
    """``model`` in eval mode, returning only the decoded ``(B, N, 5 + nc)`` tensor (no raw level list)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def export_metadata(model: nn.Module, names: list[str], head: str, imgsz: list[int], dynamic: bool,
                    half: bool) -> dict[str, str]:
    """The string metadata stored with every export (see the module docstring)."""
    return {"names": json.dumps(list(names)), "stride": json.dumps([int(s) for s in model.stride.tolist()]),
            "imgsz": json.dumps(list(imgsz)), "head": head, "dynamic": json.dumps(dynamic),
            "half": json.dumps(half), "producer": "yolo-lab export.py"}


def _fresh_grids(model: nn.Module) -> None:
    """Empty the heads' grid caches: a grid cached before tracing would enter the graph as a constant
    of one image size, and a ``--dynamic`` export would then decode other sizes wrongly."""
    for m in model.modules():
        if isinstance(getattr(m, "_grids", None), dict):
            m._grids.clear()


def write_export(file: Path, data: bytes) -> Path:
    """Write ``data`` to ``file`` through a temporary file beside it, moved onto ``file`` only when complete:
    a failed write (a read-only folder, a full disk) leaves neither a partial file nor a damaged earlier
    one, and is an ExportError naming the file."""
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, file)
    except OSError as e:
        free = "free space, or " if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise ExportError(f"cannot write {file} ({e.strerror or e}); nothing was written there: {free}write "
                          "elsewhere with --out-dir DIR") from None
    finally:
        with contextlib.suppress(OSError):  # on a read-only folder it was never created
            tmp.unlink(missing_ok=True)
    return file


def opset_range() -> tuple[int, int]:
    """The ONNX opsets an export can use: from 11, where Resize matches PyTorch's nearest upsampling, up to
    the newest that both the installed onnx and torch's TorchScript-based exporter support."""
    import onnx
    from torch.onnx import _constants

    torch_max = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)
    return MIN_OPSET, min(onnx.defs.onnx_opset_version(), torch_max)


def export_onnx(model: nn.Module, im: torch.Tensor, file: Path, metadata: dict[str, str], dynamic: bool,
                opset: int = OPSET) -> Path:
    """Write ``file`` from ``model`` (a ``DecodedOutput``) traced on ``im`` (B, 3, H, W); check it with onnx.

    The graph is built and checked in memory; the file is written at the end by :func:`write_export`.
    """
    try:
        import onnx
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from e
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "boxes"}} if dynamic else None
    _fresh_grids(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated in favour of torch.export, which needs onnxscript
        # as well; this one covers these plain conv graphs with no extra dependency
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (im,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["output0"], dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load_model_from_string(buffer.getvalue())
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    return write_export(file, proto.SerializeToString())


def export_torchscript(model: nn.Module, im: torch.Tensor, file: Path, metadata: dict[str, str]) -> Path:
    """Write ``file`` (``torch.jit`` traced on ``im``) with the metadata as extra file ``config.txt``.

    Serialised in memory first: torch's own file writer aborts the process on a full disk."""
    _fresh_grids(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still what C++/mobile load
        traced = torch.jit.trace(model, im, strict=False)
        torch.jit.save(traced, buffer, _extra_files={"config.txt": json.dumps(metadata)})
    return write_export(file, buffer.getvalue())


def check_opset(opset: int) -> None:
    """ExportError naming ``--opset`` and the supported range unless ``opset`` is in :func:`opset_range`."""
    try:
        low, high = opset_range()
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from e
    if not low <= opset <= high:
        raise ExportError(f"--opset {opset}: choose from {low} to {high} (from {MIN_OPSET}, where ONNX's Resize "
                          f"matches PyTorch's upsampling, to the newest the installed onnx and torch export)")


def export(weights: str | Path, include: list[str], imgsz: list[int] | None = None, device: str = "cpu",
           dynamic: bool = True, half: bool = False, batch_size: int = 1, opset: int = OPSET,
           out_dir: str | Path | None = None) -> list[Path]:
    """Export ``weights`` to each format in ``include``, next to it (``best.pt`` -> ``best.onnx``) or into
    ``out_dir``.

    ``imgsz`` [h, w] defaults to the checkpoint's training size (else 640). ``dynamic`` (the default): ONNX
    batch, height and width axes are free, so detect.py pads as for the .pt file. Returns the files written.
    """
    from utils.core.torch_utils import select_device
    from utils.io.checkpoint import load_checkpoint
    from utils.io.recorded import pick_imgsz

    unknown = [f for f in include if f not in FORMATS]
    if unknown:
        raise ExportError(f"--include {' '.join(unknown)}: unknown format; choose from {', '.join(FORMATS)}")
    if "onnx" in include:
        check_opset(opset)
    folder = Path(weights).parent if out_dir is None else Path(out_dir)
    if out_dir is not None and not folder.is_dir():
        raise ExportError(f"--out-dir {folder} is not a folder")
    dev = select_device(device)
    if half and dev.type != "cuda":
        raise ExportError(f"--half needs a CUDA --device (FP16 inference is GPU-only here); got {dev.type}")
    model, meta = load_checkpoint(weights, device=dev)
    if imgsz is None:
        size, source = pick_imgsz(None, meta)
        LOGGER.info("image size %d, %s", size, source)
        imgsz = [size, size]
    gs = int(model.stride.max())
    if any(s % gs for s in imgsz):
        raise ExportError(f"--img {imgsz} must be multiples of the model's largest stride {gs}")
    wrapped = DecodedOutput(model.half() if half else model).eval()
    im = torch.zeros(batch_size, 3, *imgsz, device=dev, dtype=torch.float16 if half else torch.float32)
    metadata = export_metadata(model, meta["names"], meta["head"], imgsz, dynamic, half)
    out = []
    for fmt in include:
        file = folder / (Path(weights).stem + SUFFIXES[fmt])
        if fmt == "onnx":
            out.append(export_onnx(wrapped, im, file, metadata, dynamic, opset))
        else:
            out.append(export_torchscript(wrapped, im, file, metadata))
        LOGGER.info("%s export: %s (%.1f MB)", fmt, file, file.stat().st_size / 1e6)
    return out
