"""Generic pieces of the matching rules, public and in one place: groups, ordered top-k, cell conflicts.

A new rule in ``utils/assign/`` should find here what two rules already needed:

* groups of sorted items (:func:`group_spans`, :func:`slots_in_groups`): the objects or columns of
  each image, for rules batched over images without a Python loop;
* top-k with a defined order among equal values (:func:`highest_first`, :func:`cheapest_first`):
  ``torch.topk`` leaves that order unspecified and it differs between devices, while exact ties are
  common in matching (every cell wholly inside a large object has the same IoU with it);
* one (image, cell) claimed by several objects (:func:`resolve_cell_conflicts`): it goes to the
  claimant with the largest score, the lowest object row on an exact tie.

(Rows of several levels, numbered globally, become one :class:`~utils.assign.result.LevelCandidates`
per level in :func:`utils.assign.rule.level_rows`.)

Everything is pure and no-grad.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def group_spans(group: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Size and first position of every group, for items sorted by group: (counts, start), each (n_groups,)."""
    counts = torch.bincount(group, minlength=n_groups)
    return counts, counts.cumsum(0) - counts


@torch.no_grad()
def slots_in_groups(group: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position of every item inside its group, for items already sorted by group.

    Args:
        group (Tensor[N] long): group (image) of each item, ascending.
        n_groups: number of groups (batch size).

    Returns:
        slot (Tensor[N] long): 0, 1, ... within each group; counts (Tensor[n_groups] long).
    """
    counts, start = group_spans(group, n_groups)
    slot = torch.arange(group.shape[0], device=group.device) - start[group]
    return slot, counts


@torch.no_grad()
def highest_first(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest values along the last dim, equal values lowest index first.

    Non-negative float32 values only. The float64 key ``v * (1 - index * 2^-26 / m) - index * 2^-1000``
    keeps the order of distinct values (neighbours differ by at least 2^-24 relative, or by a
    denormal near 0) and orders equal ones, zeros included, by index.
    """
    m = values.shape[-1]
    idx = torch.arange(m, device=values.device, dtype=torch.float64)
    key = values.double().mul_(1.0 - idx * (2.0 ** -26 / m)).sub_(idx * 2.0 ** -1000)
    return key.topk(k, dim=-1).indices


@torch.no_grad()
def cheapest_first(cost: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` smallest values along the last dim, equal values lowest index first.

    The float64 key ``cost * (1 + index * 2^-26 / C)`` keeps the order of distinct non-negative
    float32 costs (neighbours differ by at least 2^-24 relative) and orders equal ones by index, so
    ``topk`` gives the same answer on every device and for any padding of the batch dimension.
    """
    c = cost.shape[-1]
    ramp = torch.arange(c, device=cost.device, dtype=torch.float64).mul_(2.0 ** -26 / c).add_(1.0)
    return cost.double().mul_(ramp).topk(k, dim=-1, largest=False).indices


@torch.no_grad()
def resolve_cell_conflicts(obj: torch.Tensor, cell: torch.Tensor, image: torch.Tensor, score: torch.Tensor,
                           n_cells: int) -> torch.Tensor:
    """Keep, per (image, cell), the claim with the largest score (lowest object row on ties).

    obj, cell, image, score: (p,) one entry per claim (object row, global cell index, image, the
    score that decides, e.g. an IoU). Returns the kept entries' indices sorted by image, then cell.
    """
    if obj.numel() == 0:
        return obj
    key = image * n_cells + cell
    uniq, inv = torch.unique(key, return_inverse=True)
    best = torch.full((uniq.shape[0],), -1.0, device=score.device).scatter_reduce(0, inv, score, "amax")
    keep = score == best[inv]
    first = torch.full((uniq.shape[0],), torch.iinfo(obj.dtype).max, device=obj.device, dtype=obj.dtype)
    first = first.scatter_reduce(0, inv[keep], obj[keep], "amin")
    keep &= obj == first[inv]
    idx = keep.nonzero().squeeze(1)
    return idx[key[idx].argsort()]
