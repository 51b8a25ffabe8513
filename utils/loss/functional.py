"""Pure loss functions shared by the strategies (no state, no hyper-parameter lookups).

Inputs are logits unless a name says ``prob``; reductions are explicit arguments.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.assign.free_anchor import saturated_linear  # noqa: F401  (FreeAnchor's matching; importable here)
from utils.assign.dw_weights import DW_EPS, dw_neg_iou_weights_pairs, dw_pos_weights_pairs, dw_weights  # noqa: F401  (DW's weights; importable here)


def smooth_bce_targets(eps: float = 0.0) -> tuple[float, float]:
    """Positive and negative BCE targets under label smoothing (YOLOv5's ``smooth_BCE``)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def bce_with_logits(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0,
                    gamma: float = 0.0, alpha: float = 0.25, reduction: str = "mean") -> torch.Tensor:
    """BCE on logits with YOLOv5's ``pos_weight``; ``gamma > 0`` makes it YOLOv5's ``FocalLoss``.

    The focal form multiplies the element-wise BCE by ``alpha_t * (1 - p_t) ** gamma`` with
    ``p_t = p*y + (1-p)*(1-y)`` and ``alpha_t = y*alpha + (1-y)*(1-alpha)``.
    """
    pw = None if pos_weight == 1.0 else torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    if gamma > 0:
        p = torch.sigmoid(logits)
        p_t = target * p + (1 - target) * (1 - p)
        alpha_t = target * alpha + (1 - target) * (1 - alpha)
        loss = loss * alpha_t * (1.0 - p_t) ** gamma
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def hard_negative_mask(loss: torch.Tensor, positive: torch.Tensor, ratio: float,
                       min_neg: int = 0, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """SSD's hard negative mining: per row, the negatives with the largest loss.

    Args:
        loss (Tensor[bs, m]): a per-anchor loss to rank negatives by (e.g. objectness BCE vs 0).
        positive (BoolTensor[bs, m]): positive anchors; they are never selected.
        ratio: negatives kept per positive; a row keeps ``floor(ratio * positives)`` of them, at least
            ``min_neg``, at most all its negatives (mmdetection's ``ssd_head`` rule).
        min_neg: the floor on negatives per row (0 = SSD, where a row without positives keeps none).
        ignore (BoolTensor[bs, m] or None): anchors never selected (an ignore band; may include
            positives); the count of negatives is still ``ratio`` times the positives, taken from
            the remaining anchors.

    Returns:
        BoolTensor[bs, m], the selected negatives. Equal losses are ranked by anchor index, lower
        first (a stable sort), so the choice is reproducible.
    """
    num_pos = positive.sum(1)  # (bs,)
    excluded = positive if ignore is None else positive | ignore
    num_neg = (num_pos.to(torch.float64) * ratio).floor().long().clamp(min=int(min_neg))
    num_neg = torch.minimum(num_neg, positive.shape[1] - excluded.sum(1))
    ranked = loss.detach().masked_fill(excluded, float("-inf"))
    k = int(num_neg.max()) if num_neg.numel() else 0
    if k == 0:
        return torch.zeros_like(positive)
    # The num_neg-th largest value of each row is its threshold; losses equal to it are taken in
    # anchor order until the count is met. Same result as a stable full sort, at top-k cost.
    kth = ranked.topk(k, dim=1).values.gather(1, (num_neg - 1).clamp(min=0)[:, None])  # (bs, 1)
    above = ranked > kth
    at = (ranked == kth) & ~excluded
    need = num_neg - above.sum(1)
    keep = above | (at & (at.cumsum(1) <= need[:, None]))
    return keep & ~excluded & (num_neg > 0)[:, None]


def quality_focal_loss(logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                       beta: float = 2.0) -> torch.Tensor:
    """Quality Focal Loss (GFL, Li et al. 2020), element-wise, no reduction.

    Every logit is pushed towards 0 with ``BCE(x, 0) * sigmoid(x) ** beta``; at a positive row
    ``i`` the entry of its class ``labels[i]`` is pushed towards the soft target ``scores[i]``
    (an IoU in 0..1) with ``BCE(x, s) * |s - sigmoid(x)| ** beta``.

    Args:
        logits (Tensor[n, nc]): joint class-quality logits.
        labels (LongTensor[n]): class of each row; ``-1`` or ``>= nc`` marks background.
        scores (Tensor[n]): quality target of each row (read at positive rows only).
        beta: the focusing exponent.

    Returns:
        Tensor[n, nc], the loss of every entry.
    """
    prob = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * prob.pow(beta)
    nc = logits.shape[1]
    pos = ((labels >= 0) & (labels < nc)).nonzero().squeeze(1)
    if pos.numel():
        cls = labels[pos].long()
        x, s = logits[pos, cls], scores[pos].to(logits.dtype)
        pos_loss = F.binary_cross_entropy_with_logits(x, s, reduction="none") * (s - prob[pos, cls]).abs().pow(beta)
        loss = loss.index_put((pos, cls), pos_loss)
    return loss


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution Focal Loss (GFL): cross-entropy on the two bins around a continuous target.

    With ``left = floor(t)`` and ``right = left + 1`` the loss is
    ``CE(logits, left) * (right - t) + CE(logits, right) * (t - left)``; it is smallest when the
    softmax puts probability ``right - t`` on ``left`` and ``t - left`` on ``right``.

    Args:
        logits (Tensor[n, reg_max + 1]): distance logits over the bins 0..reg_max.
        target (Tensor[n]): distance in bins, in ``[0, reg_max)`` (callers clamp, e.g. to reg_max - 0.1).

    Returns:
        Tensor[n], the loss of every row.
    """
    target = target.to(logits.dtype)
    left = target.long()
    right = left + 1
    w_left = right.to(logits.dtype) - target
    w_right = target - left.to(logits.dtype)
    return (F.cross_entropy(logits, left, reduction="none") * w_left
            + F.cross_entropy(logits, right, reduction="none") * w_right)


# --- FreeAnchor (Zhang et al., NeurIPS 2019), as in zhangxiaosong18/FreeAnchor and mmdetection ---------
# Probabilities in, float32 and outside autocast (``F.binary_cross_entropy`` refuses autocast).

FREEANCHOR_EPS = 1e-12


def positive_bag_loss(bag_prob: torch.Tensor) -> torch.Tensor:
    """FreeAnchor's recall term per object: ``BCE(mean-max(bag_prob), 1)``, no reduction.

    Mean-max weights each bag member by ``1 / (1 - p)`` (``1 - p`` clamped at 1e-12), normalised over
    the bag, so it is the mean for a flat bag and tends to the max as one member approaches 1; the
    weights are not detached (as in the reference).

    Args:
        bag_prob (Tensor[n_obj, bag]): P_cls * P_loc of each object's bag members, in [0, 1].

    Returns:
        Tensor[n_obj]: ``-log(bag probability)`` (BCE's log clamp at -100 included).
    """
    weight = 1.0 / torch.clamp(1.0 - bag_prob, min=FREEANCHOR_EPS)
    weight = weight / weight.sum(dim=1, keepdim=True)
    mean_max = (weight * bag_prob).sum(dim=1)  # (n_obj,)
    return F.binary_cross_entropy(mean_max, torch.ones_like(mean_max), reduction="none")


def negative_bag_loss(prob: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """FreeAnchor's precision term, element-wise: ``prob**gamma * BCE(prob, 0)``, no reduction.

    ``prob`` (any shape) = P(anchor has the class and is not matched to an object of it); it is clamped
    to [1e-12, 1 - 1e-12] first, mmdetection's fix (PR #4082) for the infinite log at 0 and 1.
    """
    prob = prob.clamp(min=FREEANCHOR_EPS, max=1.0 - FREEANCHOR_EPS)
    return prob ** gamma * F.binary_cross_entropy(prob, torch.zeros_like(prob), reduction="none")


# --- dense focal negative term (FreeAnchor's precision term, DW's negative term) ----------------------

FOCAL_NEG_FLOOR = 1e-12  # floor of 1 - s: -log(1 - s) <= 27.6, d/ds <= 1e12 (ATen's BCE backward cap)
_FOCAL_NEG_CHUNK = 1 << 18  # (row, class) elements per CPU chunk: three float32 buffers stay in cache
_FOCAL_NEG_CLASS_MAJOR = 8  # at most this many classes: class-major work buffers


def row_class_index(rows: torch.Tensor, cls: torch.Tensor, no: int) -> torch.Tensor:
    """Flat indices (k, 6) into a (n, no) prediction of each row's 4 box logits, obj logit and class ``cls``."""
    out = rows[:, None] * no + torch.arange(6, device=rows.device)
    out[:, 5] += cls.to(out.device)
    return out


def pick_row_class(pred: torch.Tensor, rows: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``[x, y, w, h, obj, class cls]`` logits (k, 6) of rows of ``pred.reshape(-1, no)``, with gradient."""
    no = pred.shape[-1]
    # index_select: ~6x faster than advanced indexing on the CPU
    return pred.reshape(-1).index_select(0, row_class_index(rows, cls, no).view(-1)).view(-1, 6)


class _FocalNegativeSum(torch.autograd.Function):
    """See :func:`focal_negative_sum`. The gradient is computed in the forward pass, chunk by chunk."""

    @staticmethod
    def forward(ctx, pred: torch.Tensor, gamma: float, rows: torch.Tensor | None, cls: torch.Tensor | None):
        no = pred.shape[-1]
        nc = no - 5
        x = pred.detach().reshape(-1, no)
        n = x.shape[0]
        work = torch.float64 if pred.dtype == torch.float64 else torch.float32
        need_grad = ctx.needs_input_grad[0]
        total = torch.zeros((), dtype=work, device=x.device)
        ctx.shape, ctx.dtype = pred.shape, pred.dtype
        ctx.pick = None if rows is None else row_class_index(rows, cls, no)
        picked = None if rows is None else x.reshape(-1).index_select(0, ctx.pick.view(-1)).view(-1, 6).to(work)
        if n == 0 or nc <= 0:
            ctx.grad = torch.zeros((n, no), dtype=work, device=x.device) if need_grad else None
            return total if rows is None else (total, picked)
        grad = torch.empty((n, no), dtype=work, device=x.device) if need_grad else None
        ctx.grad = grad
        if need_grad:
            grad[:, :4] = 0
        so = torch.sigmoid(x[:, 4].to(work))  # (n,)
        step = n if x.is_cuda else max(1, min(n, _FOCAL_NEG_CHUNK // nc))
        # few classes: work class-major, (nc, rows), so every op runs one long contiguous loop
        # instead of many length-nc ones; the gradient is then copied into place
        class_major = nc <= _FOCAL_NEG_CLASS_MAJOR
        buffers: dict[int, tuple[torch.Tensor, ...]] = {}
        one = torch.ones((), dtype=work, device=x.device)
        for s in range(0, n, step):
            e = min(n, s + step)
            if e - s not in buffers:
                shape = (nc, e - s) if class_major else (e - s, nc)
                buffers[e - s] = tuple(torch.empty(shape, dtype=work, device=x.device)
                                       for _ in range(4 if class_major and need_grad else 3))
            ak, pk, qk = buffers[e - s][:3]
            if class_major:
                xc, o, csum = x[s:e, 5:].T, so[None, s:e], 0
                g = buffers[e - s][3] if need_grad else None
            else:
                xc, o, csum = x[s:e, 5:], so[s:e, None], 1
                g = grad[s:e, 5:] if need_grad else None
            torch.sigmoid(xc.to(work), out=ak)  # sigmoid(cls)
            torch.mul(ak, o, out=pk)  # s
            torch.addcmul(one, ak, o, value=-1, out=qk).clamp_(min=FOCAL_NEG_FLOOR)  # 1 - s, computed directly
            if need_grad:
                torch.div(pk, qk, out=g)  # s / (1 - s)
            qk.log_()  # log(1 - s) = -L
            if gamma == 2.0:
                pk.mul_(pk)
            elif gamma != 1.0:
                pk.pow_(gamma)  # s^gamma
            total -= torch.dot(pk.view(-1), qk.view(-1))
            if need_grad:
                g.add_(qk, alpha=-gamma).mul_(pk)  # s^gamma (gamma L + s / (1 - s)) = d(s^gamma L)/ds * s
                grad[s:e, 4] = g.sum(csum)
                g.addcmul_(g, ak, value=-1)  # * (1 - sigmoid(cls)): d/d cls logit
                if class_major:
                    grad[s:e, 5:] = g.T
        if need_grad:
            grad[:, 4].mul_(1 - so)  # d/d obj logit: the class sum times (1 - sigmoid(obj))
        return total if rows is None else (total, picked)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor, grad_rows: torch.Tensor | None = None):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError("focal_negative_sum: backward called twice (retain_graph is not supported)")
        ctx.grad = None
        if grad_out.numel() != 1 or float(grad_out) != 1.0:  # a loss used as is skips a full pass
            grad.mul_(grad_out)
        if grad_rows is not None and ctx.pick is not None:  # the picked entries' own gradient
            grad.view(-1).scatter_add_(0, ctx.pick.view(-1), grad_rows.reshape(-1).to(grad.dtype))
        return grad.view(ctx.shape).to(ctx.dtype), None, None, None


def focal_negative_sum(pred: torch.Tensor, gamma: float = 2.0, rows: torch.Tensor | None = None,
                       cls: torch.Tensor | None = None):
    """Sum over every (anchor, class) of ``s**gamma * -log(1 - s)``, ``s = sigmoid(obj) * sigmoid(cls)``.

    The one dense (anchors x classes) term of ``freeanchor`` (its precision term before the few
    matched entries are corrected, :func:`negative_bag_loss` with ``p = s``) and ``dw`` (its negative
    term at IoU weight 1, the ``s^2`` importance included with its gradient). Equal to autograd
    through ``negative_bag_loss(sigmoid(obj) * sigmoid(cls), gamma).sum()`` in value and gradient
    (tested) except where ``s`` is within ``FOCAL_NEG_FLOOR`` of 0 or 1 (the reference's clamps:
    below 1e-12 both are ~1e-36; ``s == 1.0`` gives ``-log(1e-12)`` here and BCE's 100 there).

    Cost: the gradient is computed during the forward pass and backward only scales it. On the
    CPU the work runs in chunks of ~256k elements (so the work buffers stay in cache), on CUDA in
    one piece, written into the (anchors, 5 + nc)
    gradient, directly when there are more than 8 classes, through a class-major buffer otherwise;
    about 12 passes over the class logits instead of the ~40 (and as many fresh full-size tensors)
    of autograd. Half-precision inputs are computed in float32; float64 stays float64 (the tests
    compare it with autograd at 1e-9).

    ``rows`` and ``cls`` pick, for the strategy's own sparse terms (bag members, candidates), the
    box and objectness logits of rows of ``pred.reshape(-1, 5 + nc)`` and the logit of one class
    each. Their gradient is added into the same buffer (``scatter_add_``) instead of the full-size
    zero tensors plain indexing would allocate in backward for each use.

    Args:
        pred (Tensor[..., 5 + nc]): one level's raw head output (box, obj, classes logits).
        gamma: the focal exponent (2 for both strategies).
        rows (LongTensor[k], optional): row indices into ``pred.reshape(-1, 5 + nc)``, repeats allowed.
        cls (LongTensor[k], optional): the class of each picked row (with ``rows``).

    Returns:
        0-dim Tensor, or ``(Tensor, Tensor[k, 6])`` when ``rows`` is given: the picked
        ``[x, y, w, h, obj, class]`` logits (float32, or float64 for float64 input), as
        :func:`pick_row_class`; backward may run once.
    """
    if (rows is None) != (cls is None):
        raise ValueError("focal_negative_sum: give both rows and cls, or neither")
    return _FocalNegativeSum.apply(pred, float(gamma), rows, cls)
