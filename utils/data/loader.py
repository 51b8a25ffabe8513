"""``create_dataloader``: a seeded, reproducible DataLoader over ``LoadImagesAndLabels``.

An epoch's batches are a function of (seed, epoch) alone: the shuffle order comes from
``ShuffleSampler`` (or DistributedSampler) seeded with the epoch, and each training item's
augmentations from its own seed (``LoadImagesAndLabels.item_seed``). Neither the number of workers
nor a ``--resume`` in between changes them; :func:`set_epoch` is called before each epoch.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, distributed

from utils.data.dataset import LoadImagesAndLabels

LOGGER = logging.getLogger(__name__)
_SEED_OFFSET = 6148914691236517205  # YOLOv5's generator offset


def seed_worker(worker_id: int) -> None:
    """Seed Python and NumPy in each worker from torch's per-worker seed (augmentations use both).

    Also turns off OpenCV's own threads inside the worker: the workers already use every core.
    """
    cv2.setNumThreads(0)
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


class ShuffleSampler(Sampler[int]):
    """Indices ``0..n-1`` in a random order that depends only on ``seed`` and the epoch set by
    ``set_epoch`` (as DistributedSampler does for one process)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(_SEED_OFFSET + self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Before iterating ``loader`` for ``epoch``: its shuffle order and its augmentation seeds."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def create_dataloader(path: str | Path | list, imgsz: int, batch_size: int, stride: int,
                      single_cls: bool = False, hyp: dict | None = None, augment: bool = False,
                      cache: str | bool | None = None, pad: float = 0.0, rect: bool = False,
                      workers: int = 8, prefix: str = "", shuffle: bool = False, seed: int = 0,
                      rank: int = -1, image_weights: bool = False, nc: int | None = None,
                      ) -> tuple[DataLoader, LoadImagesAndLabels]:
    """Build the dataset of one split and its loader -> ``(loader, dataset)``.

    Batches are ``(imgs uint8 (bs, 3, H, W), targets float32 (n, 6), paths, shapes)``.
    ``nc`` (optional) lets the label check reject class ids >= nc. Workers are
    ``min(cpu_count, batch_size, workers)`` and persistent; the shuffle order and the worker seeds
    derive from ``seed`` (and ``rank``), so a run is reproducible. With ``rank != -1`` a
    DistributedSampler shards and shuffles. ``rect`` disables shuffling (batches are shape-sorted).
    """
    if rect and shuffle:
        LOGGER.warning("%sWARNING: rect=True is incompatible with shuffle, setting shuffle=False", prefix)
        shuffle = False
    dataset = LoadImagesAndLabels(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect,
                                  image_weights=image_weights, cache_images=cache, single_cls=single_cls,
                                  stride=int(stride), pad=pad, prefix=prefix, nc=nc)
    batch_size = min(batch_size, len(dataset))
    nw = max(0, min(os.cpu_count() or 1, batch_size if batch_size > 1 else 0, workers))
    dataset.seed = seed
    if rank != -1:
        sampler = distributed.DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    else:
        sampler = ShuffleSampler(len(dataset), seed) if shuffle else None
    generator = torch.Generator()
    generator.manual_seed(_SEED_OFFSET + seed + max(rank, 0))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=nw, sampler=sampler, pin_memory=torch.cuda.is_available(),
                        collate_fn=LoadImagesAndLabels.collate_fn, worker_init_fn=seed_worker,
                        generator=generator, persistent_workers=nw > 0)
    return loader, dataset
