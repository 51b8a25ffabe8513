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
        self.names: list[str] = json.loads(meta["names"])
        self.stride = torch.tensor(json.loads(meta["stride"]), dtype=torch.float32)
        self.imgsz: list[int] = json.loads(meta["imgsz"])
        self.head: str = meta["head"]
        self.dynamic: bool = json.loads(meta.get("dynamic", "false"))
        self.fixed_imgsz: list[int] | None = None if self.dynamic else self.imgsz
        # what detect.py reads from a checkpoint's meta: a dynamic export defaults to its exported size
        self.meta = {"names": self.names, "head": self.head, "opt": {"imgsz": max(self.imgsz)}, "path": str(path)}
        inp = self.session.get_inputs()[0]
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
        if not self.dynamic and list(x.shape[2:]) != list(self.imgsz):
            raise ValueError(f"{self.path} was exported for {self.imgsz[0]}x{self.imgsz[1]} input, got "
                             f"{x.shape[2]}x{x.shape[3]}; use --img {self.imgsz[0]} or export with --dynamic")
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(self.input_dtype)})[0]
        return torch.from_numpy(out).to(x.device).float()
