"""Multi-process training launched by ``torchrun --nproc_per_node N train.py ...``.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; each process trains on its shard of every batch
(DistributedSampler) and DDP averages the gradients. NCCL on GPUs, Gloo on CPU. Rank 0 alone
logs, plots, validates and writes checkpoints.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from utils.core.torch_utils import select_device

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = -1  # global rank, -1 when not distributed
    local_rank: int = -1
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank in (-1, 0)


def dist_info() -> DistInfo:
    """The launcher's environment (read when training starts, never at import)."""
    world = int(os.getenv("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.getenv("RANK", "0")), int(os.getenv("LOCAL_RANK", "0")), world)


def init_distributed(info: DistInfo, device_spec: str) -> torch.device:
    """Join the process group; the device is this process's GPU (cuda:LOCAL_RANK) or the CPU."""
    if info.world <= 1:
        return select_device(device_spec)
    use_cuda = torch.cuda.is_available() and str(device_spec).lower() != "cpu"
    if use_cuda:
        if torch.cuda.device_count() <= info.local_rank:
            raise ValueError(f"LOCAL_RANK {info.local_rank} has no GPU ({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=1800))
    LOGGER.info("DDP rank %d/%d on %s (%s)", info.rank, info.world, device, dist.get_backend())
    return device


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's value of a picklable object, on every rank."""
    if info.world <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def replicas_identical(model: torch.nn.Module, info: DistInfo) -> bool:
    """True when every rank holds bit-identical parameters (a DDP desync check).

    BatchNorm running statistics are not compared: each rank updates them from its own shard after
    DDP broadcast rank 0's at the start of the forward pass, and only rank 0's are saved."""
    if info.world <= 1:
        return True
    import hashlib

    h = hashlib.sha256()
    for k, v in model.named_parameters():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    digests = [None] * info.world
    dist.all_gather_object(digests, h.hexdigest())
    same = len(set(digests)) == 1
    if info.main:
        (LOGGER.info if same else LOGGER.error)(
            "DDP: weights %s on %d ranks", "identical" if same else f"DIFFER ({digests})", info.world)
    return same
