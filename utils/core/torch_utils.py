"""Small PyTorch helpers shared by the CLIs and the trainer."""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator

import torch
import torch.utils.deterministic

LOGGER = logging.getLogger(__name__)


def select_device(device: str | int | None = "") -> torch.device:
    """Turn a YOLOv5 ``--device`` string into a ``torch.device``.

    ``''`` -> first CUDA GPU if there is one, else CPU; ``'cpu'``; ``'0'`` or ``'cuda:0'`` -> that GPU;
    ``'0,1'`` -> the first listed GPU (multi-GPU training is not supported; a warning says so);
    ``'mps'`` -> Apple GPU. Asking for a GPU that is not there raises ``ValueError`` naming it.
    """
    spec = str(device if device is not None else "").strip().lower().replace("cuda:", "").replace(" ", "")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("--device mps requested but MPS is not available")
        return torch.device("mps")
    if spec == "":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    ids = spec.split(",")
    if not all(i.isdigit() for i in ids):
        raise ValueError(f"invalid --device '{device}': use 'cpu', 'mps', a GPU index like '0', or a list '0,1'")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [i for i in ids if int(i) >= available]
    if missing:
        raise ValueError(f"--device '{device}' requested but only {available} CUDA device(s) are available")
    if len(ids) > 1:
        LOGGER.warning("--device %s: several GPUs given, using cuda:%s only", device, ids[0])
    return torch.device(f"cuda:{ids[0]}")


def numerics_environment() -> dict[str, str | int]:
    """What a CPU run's float results depend on besides its seed and data (docs/reproducibility.md): torch's
    intra-op thread count (reductions split differently), the CPU kernels torch dispatches to, and the
    OpenCV / NumPy versions that generate the built-in data and augment every image."""
    import cv2
    import numpy as np

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "opencv": cv2.__version__,
            "numpy": np.__version__}


def synced_time(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work is done, so GPU time is counted where it is spent."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@contextlib.contextmanager
def repeatable_kernels(device: torch.device) -> Iterator[None]:
    """On the CPU, torch's deterministic algorithms for the duration (the previous setting comes back on exit);
    elsewhere nothing.

    With several intra-op threads, torch's CPU kernels for indexed writes race whenever two rows hit one
    element: ``t[idx] = v`` keeps whichever duplicate's thread came last, and the backward of ``x[idx]``
    (index_put with accumulate) adds the duplicates' gradients in thread order. Every loss writes its
    objectness targets and gathers its matched rows that way (a cell matched by two objects), so two runs of
    one command differed from the first batch on (issue 36). The deterministic versions sort the indices
    (stable), which gives the one-thread result, last write wins, at any thread count; no cost above the
    noise of a training step's CPU time (docs/reproducibility.md). ``fill_uninitialized_memory`` (NaN-filling every
    ``torch.empty``) stays off: it guards against reading uninitialised memory, not against races, and costs
    time. Not on CUDA, where this mode makes some kernels raise and others slow.
    """
    if device.type != "cpu":
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory)
    # warn_only: a CPU op without a deterministic version warns (once) instead of stopping the run
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = before[2]
