"""The precision of the forward pass: ``--precision auto|fp32|bf16`` of train.py, val.py and detect.py.

- ``fp32``: no autocast.
- ``bf16``: ``torch.autocast`` to bfloat16, no GradScaler (bfloat16 has float32's exponent range).
  Natively fast on CPUs with AVX512-BF16 or AMX (Intel Cooper Lake / Sapphire Rapids and later, AMD
  Zen 4 and later), detected from the CPU's feature flags; elsewhere it is emulated and slower than
  fp32, so forcing it there warns instead of failing.
- ``fp16`` (CUDA only, what ``auto`` picks there, as YOLOv5 does): autocast to float16 with a GradScaler.

``auto`` in training is fp16 on CUDA, bf16 on a CPU with native bf16 (``CPU_BF16_BY_DEFAULT``,
docs/cpu_bf16.md: the accuracy study that decided it) and fp32 elsewhere. ``auto``
at inference (val.py, detect.py) is bf16 on such CPUs (``CPU_BF16_INFERENCE``, measured) and fp32
elsewhere (``--half`` keeps YOLOv5's float16 model on CUDA). Only the forward pass is autocast: the
losses and the boxes are computed from float32 outputs, and the weights, BatchNorm statistics,
optimiser state, EMA and checkpoints stay float32.
"""
from __future__ import annotations

import contextlib
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16")
# /proc/cpuinfo flags of CPUs that run bfloat16 matrix maths natively (oneDNN uses either)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 training on such CPUs by default: docs/cpu_bf16.md's study (BCCD, yolov5n, 30 epochs, 8 seeds each)
# put bf16 - fp32 mAP50-95 at -0.001 [-0.012, +0.009], inside the +-0.02 the issue asked for
CPU_BF16_BY_DEFAULT = True
# val.py of the official yolov5n BCCD checkpoint at 320 px: mAP50-95 0.43293 in bf16, 0.43477 in fp32
# (allowed: within 0.002, docs/cpu_bf16.md)
CPU_BF16_INFERENCE = True
# channels_last (NHWC) on x86 CPUs, fp32 and bf16 alike: measured to pay inside the whole training step
# (benchmarks/precision_speed.py: fp32 1.36x, bf16 1.35x on top of autocast); only the memory layout
# changes, not the arithmetic's precision
CPU_CHANNELS_LAST = platform.machine().lower() in ("x86_64", "amd64")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What one run computes its forward pass in, and why (the line the start of training logs)."""

    name: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda | mps
    reason: str
    channels_last: bool = False  # model and batches in NHWC memory format

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def grad_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 does not."""
        return self.name == "fp16"

    def autocast(self) -> ContextManager:
        """The forward pass's context: autocast to ``dtype``, or nothing for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        """``AMP: bf16 autocast on CPU (avx512_bf16)``, ``AMP: off, fp32 (...)``."""
        where = self.device_type.upper()
        layout = ", channels_last" if self.channels_last else ""
        if self.name == "fp32":
            return f"AMP: off, fp32{layout} on {where} ({self.reason})"
        extra = " + GradScaler" if self.grad_scaler else ""
        return f"AMP: {self.name} autocast{extra}{layout} on {where} ({self.reason})"

    def prepare(self, model: nn.Module) -> nn.Module:
        """``model`` in this precision's memory format (in place; its weights stay float32)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def batch(self, imgs: torch.Tensor) -> torch.Tensor:
        """A float batch (B, 3, H, W) in this precision's memory format."""
        return imgs.contiguous(memory_format=torch.channels_last) if self.channels_last else imgs


def cpu_bf16_feature(cpuinfo: Path | str = "/proc/cpuinfo") -> str | None:
    """The CPU feature that runs bfloat16 natively (``amx_bf16`` or ``avx512_bf16``), or None.

    Read from the kernel's CPU flags; where there is no /proc/cpuinfo (macOS, Windows) torch's own
    AVX512-BF16 query answers."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        query = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return "avx512_bf16" if query is not None and query() else None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return next((f for f in CPU_BF16_FLAGS if f in flags), None)


def resolve_precision(requested: str, device: torch.device, *, inference: bool = False,
                      cpu_feature: str | None | bool = True) -> Precision:
    """The ``Precision`` of ``--precision requested`` on ``device``, for training or ``inference``.

    cpu_feature: the CPU's native bf16 feature (True: detect it with ``cpu_bf16_feature``). Forcing bf16
    where it is not native logs a warning (it runs, slowly); an unknown name is a ValueError.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision '{requested}'; choose from {', '.join(PRECISIONS)}")
    kind = device.type
    if kind == "cuda":
        return cuda_precision(requested, device, inference)
    feature = (cpu_bf16_feature() if cpu_feature is True else cpu_feature) if kind == "cpu" else None
    layout = kind == "cpu" and CPU_CHANNELS_LAST
    if requested == "fp32":
        return Precision("fp32", kind, "--precision fp32", channels_last=layout)
    if requested == "bf16":
        if kind == "cpu" and not feature:
            LOGGER.warning("WARNING: --precision bf16 on a CPU without %s: bfloat16 is emulated there and "
                           "slower than fp32", " or ".join(CPU_BF16_FLAGS))
            return Precision("bf16", kind, "--precision bf16, not native on this CPU")
        return Precision("bf16", kind, f"--precision bf16, {feature}" if feature else "--precision bf16",
                         channels_last=layout)
    if not feature:
        return Precision("fp32", kind, "no bf16 on this CPU" if kind == "cpu" else f"no autocast on {kind}",
                         channels_last=layout)
    if not (CPU_BF16_INFERENCE if inference else CPU_BF16_BY_DEFAULT):
        return Precision("fp32", kind, f"{feature} present; bf16 training stays off until its accuracy "
                                       "is shown equal, docs/cpu_bf16.md; --precision bf16 turns it on",
                         channels_last=layout)
    return Precision("bf16", kind, feature, channels_last=layout)


def cuda_precision(requested: str, device: torch.device, inference: bool = False) -> Precision:
    """CUDA: ``auto`` = fp16 autocast with a GradScaler in training (YOLOv5's AMP), fp32 at inference
    (``--half`` there); bf16 without a GradScaler."""
    if requested == "fp32":
        return Precision("fp32", "cuda", "--precision fp32")
    if requested == "bf16":
        if not torch.cuda.is_bf16_supported():
            LOGGER.warning("WARNING: --precision bf16 on %s, which has no native bfloat16: expect it to be slow",
                           torch.cuda.get_device_name(device))
        return Precision("bf16", "cuda", "--precision bf16")
    if inference:
        return Precision("fp32", "cuda", "--half for float16")
    return Precision("fp16", "cuda", "YOLOv5's AMP")


__all__ = ["Precision", "PRECISIONS", "cpu_bf16_feature", "resolve_precision", "CPU_BF16_BY_DEFAULT",
           "CPU_BF16_INFERENCE"]
