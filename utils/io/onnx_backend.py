"""Run a model exported by export.py through onnxruntime, with the interface detect.py uses from ``Model``.

``OnnxModel(x)`` takes ``(B, 3, H, W)`` float 0..1 and returns the decoded ``(B, N, 5 + nc)`` tensor
(x, y, w, h pixels, objectness, class probabilities) on ``x``'s device, as an eval-mode ``Model``'s
first output; ``stride``, ``names``, ``imgsz``, ``head`` and ``dynamic`` come from the file's metadata
(``fixed_imgsz``: the only input size a static export takes, None when dynamic).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from utils.io.export import INSTALL_HINT

LOGGER = logging.getLogger(__name__)
REQUIRED_KEYS = ("names", "stride", "imgsz", "head")


class OnnxModel:
    """An exported ``.onnx`` file in an onnxruntime session (CUDA provider when ``device`` is a GPU and
    onnxruntime has it, else CPU)."""

    def __init__(self, path: str | Path, device: torch.device = torch.device("cpu")) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ValueError(f"running {path} needs onnxruntime: {INSTALL_HINT}") from e
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--weights {path} not found")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"--weights {path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise ValueError(f"--weights {path} lacks the metadata {', '.join(missing)}; export it with export.py")
        self.path = path
        self.names, self.stride, self.imgsz, self.dynamic = _read_metadata(meta, path)
        self.head: str = meta["head"]
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int):  # a symbolic width is checked on the first output instead
            self._check_width(width)
        inp = self.session.get_inputs()[0]
        self.fixed_batch = _check_against_graph(path, inp.shape, self.session.get_outputs()[0].shape, self.stride,
                                                self.imgsz, self.dynamic)
        self.fixed_imgsz: list[int] | None = None if self.dynamic else self.imgsz
        # what detect.py reads from a checkpoint's meta: a dynamic export defaults to its exported size
        self.meta = {"names": self.names, "head": self.head, "opt": {"imgsz": max(self.imgsz)}, "path": str(path)}
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        LOGGER.info("loaded ONNX model %s (%d classes, head %s, %s input %s)", path, len(self.names), self.head,
                    "dynamic" if self.dynamic else "fixed", "x".join(map(str, self.imgsz)))

    def half(self) -> "OnnxModel":
        """The precision is fixed at export (``export.py --half``); inputs are cast to it in ``__call__``."""
        if self.input_dtype != np.float16:
            LOGGER.warning("%s was exported in float32; --half has no effect (export with --half)", self.path)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            raise ValueError(f"{self.path} was exported for batches of {self.fixed_batch}, got {x.shape[0]} "
                             "image(s); export it with --batch-size 1, or without --static")
        if not self.dynamic and list(x.shape[2:]) != list(self.imgsz):
            raise ValueError(f"{self.path} was exported for {self.imgsz[0]}x{self.imgsz[1]} input, got "
                             f"{x.shape[2]}x{x.shape[3]}; use --img {self.imgsz[0]} or export with --dynamic")
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(self.input_dtype)})[0]
        self._check_width(out.shape[-1])
        return torch.from_numpy(out).to(x.device).float()

    def _check_width(self, width: int) -> None:
        """Output rows are x, y, w, h, objectness and one score per class: 5 + len(names) wide."""
        if width != 5 + len(self.names):
            raise ValueError(f"--weights {self.path}: the model outputs {width - 5} class scores but its metadata "
                             f"names {len(self.names)} classes (metadata copied from another model?); re-export "
                             "it with export.py")


def _read_metadata(meta: dict[str, str], path: Path) -> tuple[list[str], torch.Tensor, list[int], bool]:
    """(names, stride, imgsz [h, w], dynamic) from export.py's metadata; ValueError naming the file and key."""
    def value(key: str, default: str | None = None):
        try:
            return json.loads(meta[key] if default is None else meta.get(key, default))
        except json.JSONDecodeError:
            raise ValueError(f"--weights {path}: metadata '{key}' is not JSON ({meta[key]!r:.60})") from None

    names, stride, imgsz, dynamic = value("names"), value("stride"), value("imgsz"), value("dynamic", "false")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"--weights {path}: metadata 'names' must be a non-empty list of class names")
    if not isinstance(stride, list) or not stride or not all(_positive(v) and float(v).is_integer() for v in stride):
        raise ValueError(f"--weights {path}: metadata 'stride' must be a list of whole numbers of pixels (8, 16, 32), "
                         f"got {stride!r:.60}")
    if not isinstance(imgsz, list) or len(imgsz) != 2 or not all(_positive(v) and isinstance(v, int) for v in imgsz):
        raise ValueError(f"--weights {path}: metadata 'imgsz' must be two positive integers, got {imgsz!r:.60}")
    if any(v % max(stride) for v in imgsz):
        raise ValueError(f"--weights {path}: metadata 'imgsz' {imgsz} is not a multiple of the largest 'stride' "
                         f"{max(stride):g}; re-export it with export.py")
    if not isinstance(dynamic, bool):
        raise ValueError(f"--weights {path}: metadata 'dynamic' must be true or false, got {dynamic!r:.60}")
    return names, torch.tensor(stride, dtype=torch.float32), imgsz, dynamic


def _check_against_graph(path: Path, input_shape: list, output_shape: list, stride: torch.Tensor,
                         imgsz: list[int], dynamic: bool) -> int | None:
    """The metadata must describe the graph it travels with: an input fixed at H x W is ``imgsz`` and not
    ``dynamic``, and a fixed output's N rows are a whole number of boxes per cell of the strides' grids.
    ValueError naming the file and the key otherwise. Returns the fixed batch size (None when free)."""
    if len(input_shape) != 4:
        raise ValueError(f"--weights {path}: the graph's input has shape {input_shape}, expected (batch, 3, height, "
                         "width); export it with export.py")
    batch, hw = input_shape[0], input_shape[2:]
    if all(isinstance(d, int) for d in hw):
        if dynamic:
            raise ValueError(f"--weights {path}: metadata 'dynamic' is true, but the graph's input is fixed at "
                             f"{hw[0]}x{hw[1]}; re-export it with export.py")
        if list(hw) != imgsz:
            raise ValueError(f"--weights {path}: metadata 'imgsz' is {imgsz}, but the graph's input is fixed at "
                             f"{hw[0]}x{hw[1]}; re-export it with export.py")
        cells = sum((hw[0] // int(s)) * (hw[1] // int(s)) for s in stride.tolist())
        rows = output_shape[1] if len(output_shape) == 3 else None
        if isinstance(rows, int) and (cells == 0 or rows % cells):
            raise ValueError(f"--weights {path}: metadata 'stride' {[int(s) for s in stride.tolist()]} does not fit "
                             f"the graph: {rows} output rows for a {hw[0]}x{hw[1]} input; re-export it with export.py")
    return batch if isinstance(batch, int) else None


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
