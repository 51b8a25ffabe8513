"""Will a training step fit in memory? A lower bound on what a step at the run's image size and batch
needs, from the model itself, checked before the first batch so that ``--img 8192`` is refused in one
line instead of ending in an allocator traceback minutes later."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from utils.core.errors import UserError

LOGGER = logging.getLogger(__name__)
PROBE = 128  # px: the side of the probe image; every level of a stride-64 model still has 2 cells


def activation_elements(model: nn.Module, imgsz: int) -> int:
    """Elements that the convolutions and BatchNorms of ``model`` output for one ``imgsz`` x ``imgsz``
    image: what autograd keeps for the backward pass, at least (BatchNorm keeps its input, the conv's
    output; the activation after it keeps BatchNorm's output). Measured on a PROBE-pixel image (eval
    mode, no grad: neither BatchNorm statistics nor any RNG move) and scaled by the area, which is exact
    for a fully convolutional network."""
    total = [0]

    def count(module: nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    kept = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    hooks = [m.register_forward_hook(count) for m in kept]
    was_training = model.training
    p = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, PROBE, PROBE, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return int(total[0] * (imgsz / PROBE) ** 2)


def available_bytes(device: torch.device) -> tuple[int | None, str]:
    """(bytes this process may still allocate, what they are): free GPU memory on CUDA; on the CPU the
    smaller of the system's MemAvailable and the cgroup's limit less its usage. None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], f"free memory on {torch.cuda.get_device_name(device)}"
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            cap = (Path("/sys/fs/cgroup") / limit).read_text().strip()
            if cap != "max" and int(cap) < 2 ** 60:
                found.append(int(cap) - int((Path("/sys/fs/cgroup") / usage).read_text()))
                break
        except (OSError, ValueError):
            continue
    return (min(found), "available RAM") if found else (None, "")


def check_step_fits(model: nn.Module, imgsz: int, batch: int, bytes_per_element: int, device: torch.device) -> int:
    """Refuse (UserError, one line) a run whose step needs more memory than there is; returns the
    estimate in bytes. ``batch`` is the images one step of this machine holds (all ranks on a CPU)."""
    need = (activation_elements(model, imgsz) * bytes_per_element + 3 * imgsz * imgsz * 4) * batch
    have, what = available_bytes(device)
    if have is not None and need > have:
        raise UserError(f"--img {imgsz} with a batch of {batch}: a training step needs at least {need / 2 ** 30:.1f} "
                        f"GiB for activations alone, but only {max(have, 0) / 2 ** 30:.1f} GiB of {what} is there; "
                        "lower --img or --batch-size")
    return need


def local_batch(batch_size: int, world: int, device: torch.device) -> int:
    """Images held at once on this machine: the rank's share on a GPU; on the CPU every local rank's."""
    per_rank = batch_size // max(world, 1)
    if device.type == "cuda":
        return per_rank
    return per_rank * int(os.environ.get("LOCAL_WORLD_SIZE", max(world, 1)))
