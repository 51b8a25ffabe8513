"""The base of every strategy on the anchor-free ``dfl`` head (models/dfl_head.py): ``gfl``, ``tal``.

Their losses consume plain positives (one row per (image, cell)) and compute or read a soft target, so
the matching rule is a hyp choice, ``assigner: atss | tal | simota | max_iou`` (defaults: gfl -> atss,
tal -> tal). The rows of ``tal`` carry their soft targets in ``weight``; the other rules give none, and a
loss that needs one uses the IoU of the decoded box instead.

What such a strategy shares, written once: the check that its ``reg_max`` hyp key equals the head's,
the layout of a head row (``4 * (reg_max + 1)`` distance logits, then ``nc`` class logits), gathering
the rows an assignment names, decoding a row's distances into a box and encoding a target box into the
four side distances the Distribution Focal Loss pulls towards. Boxes are compared in grid units of
their level with the cell corner as origin (``box_xywh_cell`` of :class:`utils.assign.result.LevelCandidates`),
so positives of all levels are processed in one pass.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from utils.assign.result import AssignResult, LevelCandidates
from utils.assign.priors import HeadPriors
from utils.assign.view import DFLView, PredictionView
from utils.boxes import xywh2xyxy
from utils.loss.base import POSITIVE, LossStrategy, StrategyHyp, head_of
from utils.loss.functional import distribution_focal_loss


class BackgroundFocalAndRows(torch.autograd.Function):
    """One level's ``(sum of softplus(x) * sigmoid(x) ** beta over pred[..., start:], pred rows)``.

    The first output is QFL with target 0 summed over every cell and class (equal to summing
    :func:`utils.loss.functional.quality_focal_loss` with no positives; ``beta = 0`` gives plain BCE
    with target 0, the background of ``tal``'s class loss); the second is
    ``pred.view(-1, no)[rows]``, the positive cells. Both in one function because this runs over
    every cell and class: the analytic gradient d/dx = p^beta * (p + beta * softplus(x) * (1 - p))
    is formed in the forward pass from the same sigmoid, softplus is taken from it as
    ``relu(x) - log1p(-min(p, 1 - p))`` (exact for both signs of x, cheaper than ``F.softplus`` on
    the strided class slice), and the backward pass writes both gradients into one zero tensor.
    """

    @staticmethod
    def forward(ctx, pred: torch.Tensor, rows: torch.Tensor, start: int, beta: float):
        x = pred[..., start:].float()
        prob = x.sigmoid()
        one_minus = 1.0 - prob
        log_max = torch.minimum(prob, one_minus).neg_().log1p_()  # log(max(p, 1 - p))
        softplus = x.clamp(min=0).sub_(log_max)
        del log_max
        ctx.grad = None
        if beta == 0.0:  # BCE with target 0: d/dx softplus(x) = p, no p^beta pass
            loss = softplus.sum()
            if ctx.needs_input_grad[0]:
                ctx.grad = prob
        else:
            prob_beta = prob * prob if beta == 2.0 else prob.pow(beta)
            loss = torch.dot(softplus.view(-1), prob_beta.view(-1))
            if ctx.needs_input_grad[0]:
                ctx.grad = torch.addcmul(prob, softplus, one_minus, value=beta).mul_(prob_beta)
        ctx.save_for_backward(rows)
        ctx.start, ctx.shape, ctx.dtype = start, pred.shape, pred.dtype
        return loss, pred.reshape(-1, pred.shape[-1])[rows]

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, grad_rows: torch.Tensor):
        (rows,) = ctx.saved_tensors
        g, ctx.grad = ctx.grad, None
        out = torch.zeros(ctx.shape, dtype=ctx.dtype, device=g.device)
        out[..., ctx.start:] = g.mul_(grad_loss)
        if grad_rows is not None and rows.numel():
            out.view(-1, ctx.shape[-1]).index_add_(0, rows, grad_rows.to(ctx.dtype))
        return out, None, None, None



@dataclasses.dataclass(frozen=True)
class DFLHyp(StrategyHyp):
    """Keys every dfl-head strategy has: the head's size and its matching rule (whose own keys, such as
    ``atss_topk`` or ``tal_topk``, live with the rule in ``utils/assign/``)."""

    RANGES: ClassVar[dict[str, str]] = {"reg_max": POSITIVE}

    reg_max: int = 16  # must equal the dfl head's reg_max (bins 0..reg_max per side)
    assigner: str = "atss"  # matching rule: atss | tal | simota | max_iou


class DFLLossStrategy(LossStrategy):
    """A strategy on the ``dfl`` head.

    preds: per level ``(bs, 1, ny, nx, n_dist + nc)`` raw logits, ``n_dist = 4 * (reg_max + 1)``
    (see :class:`models.dfl_head.DFLDetect`).
    """

    head: ClassVar[str] = "dfl"
    Hyp: ClassVar[type[StrategyHyp]] = DFLHyp

    def __init__(self, model: nn.Module, hyp: dict[str, Any]):
        super().__init__(model, hyp)
        det = head_of(model)
        if self.hyp.reg_max != det.reg_max:
            raise ValueError(f"hyp reg_max {self.hyp.reg_max} differs from the dfl head's reg_max {det.reg_max}")
        self.reg_max: int = det.reg_max
        self.n_dist: int = 4 * (det.reg_max + 1)

    def view(self, preds: list[torch.Tensor], priors: HeadPriors) -> PredictionView:
        return DFLView(preds, priors, self.box_coder, self.n_dist)

    @staticmethod
    def concat_levels(assignment: AssignResult | list[LevelCandidates]) -> LevelCandidates:
        """The rows of every level as one :class:`LevelCandidates` (level order kept)."""
        levels = list(assignment)
        if not levels:
            return LevelCandidates.empty()
        names = [f.name for f in dataclasses.fields(LevelCandidates)]
        return LevelCandidates(*(None if any(getattr(m, n) is None for m in levels)
                                 else torch.cat([getattr(m, n) for m in levels]) for n in names))

    def background_and_rows(self, preds: list[torch.Tensor], assignment: AssignResult,
                            beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The class loss with target 0 over every cell and class, and the assigned rows, in one pass.

        Returns (sum of ``softplus(x) * sigmoid(x) ** beta`` over all class logits: QFL's background,
        BCE's with ``beta = 0``; the head rows ``(n, no)`` of every assigned cell, levels concatenated
        in level order), see :class:`BackgroundFocalAndRows`.
        """
        total = torch.zeros((), device=preds[0].device)
        rows = []
        for p, m in zip(preds, assignment):
            background, r = BackgroundFocalAndRows.apply(p, m.flat_rows(p), self.n_dist, beta)
            total = total + background
            rows.append(r)
        return total, torch.cat(rows)

    def boxes(self, dist: torch.Tensor, box_xywh_cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted, target) xyxy ``(n, 4)`` in grid units, cell corner origin.

        dist (n, n_dist): distance logits of the rows; box_xywh_cell (n, 4): their objects' xywh in grid
        units relative to the cell corner (:func:`models.geometry.cell_frame`).
        """
        return self.box_coder.decode(dist), xywh2xyxy(box_xywh_cell.float())

    def dfl_per_row(self, dist: torch.Tensor, target_xyxy: torch.Tensor, eps: float) -> torch.Tensor:
        """Distribution Focal Loss of each row ``(n,)``, the mean over its four sides.

        The target distances (strides from the cell centre) are clamped to ``[0, reg_max - eps]`` so
        that both bins around them exist.
        """
        target_ltrb = self.box_coder.encode(target_xyxy, eps=eps)
        dfl = distribution_focal_loss(dist.reshape(-1, self.reg_max + 1), target_ltrb.reshape(-1))
        return dfl.view(-1, 4).mean(1)
