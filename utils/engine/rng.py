"""The random number generators of a run: seeding, and their states as plain data for checkpoints (a
resumed run continues the exact random stream it would have drawn)."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def init_seeds(seed: int) -> None:
    """Seed python, numpy and torch (the trainer passes the seed plus the rank plus one)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as plain data (for weights_only checkpoints)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, list(internal), gauss_next]}


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
