"""The compiled kernels (utils/native.py: focal_negative.c, prior_match.c, dw_pairs.c) against the PyTorch code."""
from __future__ import annotations

import pytest
import torch

from utils import native
from utils.loss.functional import FOCAL_NEG_FLOOR, focal_negative_sum


@pytest.fixture
def native_on(monkeypatch):
    """Every kernel enabled and built (they need the same compiler), else the test is skipped."""
    monkeypatch.setenv("YOLO_NATIVE", "1")
    native.reset()
    if any(native.library(name) is None for name in native.SOURCES):
        pytest.skip("no C compiler here: the PyTorch code is the only path")
    yield
    native.reset()


def grads(x: torch.Tensor, rows=None, cls=None, scale=1.0):
    """Value and gradient of focal_negative_sum (plus a weighted sum of the picked entries) at x."""
    p = x.clone().requires_grad_()
    out = focal_negative_sum(p, 2.0, rows=rows, cls=cls)
    v = out if rows is None else out[0] + (out[1] * torch.arange(1.0, 7.0, dtype=out[1].dtype)).sum()
    (v * scale).backward()
    return v.item(), p.grad.double()


# The reference is the PyTorch code in float64. The float32 PyTorch code is itself ~1e-2 off it in
# relative gradient where s or a sigmoid rounds to 1 (it computes 1 - s and 1 - sigmoid by subtraction;
# the kernel as exp(-v) * sigmoid(v)), so the kernel is held to float64, more tightly than float32 PyTorch.
@pytest.mark.parametrize("nc", [1, 3, 15, 16, 80])  # the few-classes layout below 16, the row layout from 16
def test_kernel_equals_the_pytorch_code_in_float64(native_on, nc):
    g = torch.Generator().manual_seed(nc)
    x = torch.randn(3, 3, 7, 9, 5 + nc, generator=g) * 4
    rows = torch.tensor([0, 5, 5, 100, 188])
    cls = torch.tensor([0, nc - 1, 0, nc // 2, nc - 1])
    v_nat, g_nat = grads(x, rows, cls, scale=0.7)
    v_ref, g_ref = grads(x.double(), rows, cls, scale=0.7)
    assert v_nat == pytest.approx(v_ref, rel=1e-5)
    assert torch.allclose(g_nat, g_ref, rtol=1e-4, atol=1e-6)
    assert (g_nat[..., :4].reshape(-1, 4)[rows.max() + 1:] == 0).all()  # box columns of unpicked rows
    with torch.no_grad():  # value only
        assert focal_negative_sum(x, 2.0).item() == pytest.approx(focal_negative_sum(x.double(), 2.0).item(), rel=1e-5)


@pytest.mark.parametrize("nc", [3, 80])
def test_kernel_at_extreme_logits_follows_float64(native_on, nc):
    # s within float32 rounding of 1, logits past the kernel's clamp of +-80, huge finite logits
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 4, 5, 5 + nc, generator=g) * 4
    x[0, 0, 0, :, 4:] = 30.0
    x[0, 0, 1, :, 4:] = 10.0
    x[0, 0, 2, :, 4:] = -90.0
    x[1, 2, 3, :, 5:] = 1e30
    v_nat, g_nat = grads(x)
    v_ref, g_ref = grads(x.double())
    assert v_nat == pytest.approx(v_ref, rel=1e-5)
    assert torch.allclose(g_nat, g_ref, rtol=3e-3, atol=1e-6)  # float32 exp(-30) times a floored 1 / 1e-12


def test_kernel_sum_and_gradient_by_hand(native_on):
    # one row, one class: obj 0, cls 0 -> s = 1/4; sum s^2 * -log(3/4); d/d cls = s^2 (2 L + s / q) (1 - 1/2)
    x = torch.zeros(1, 6)
    total, grad = native.focal_negative(x, 2.0, FOCAL_NEG_FLOOR, True)
    s, q = 0.25, 0.75
    L = -torch.log(torch.tensor(q, dtype=torch.float64)).item()
    g = s * s * (2 * L + s / q)
    assert total == pytest.approx(s * s * L, rel=1e-6)
    assert grad[0, 5].item() == pytest.approx(g * 0.5, rel=1e-5)
    assert grad[0, 4].item() == pytest.approx(g * 0.5, rel=1e-5)
    assert grad[0, :4].tolist() == [0, 0, 0, 0]


def test_rows_split_between_threads_cover_everything(native_on):
    x = torch.randn(10_000, 8, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        total, grad = native.focal_negative(x, 2.0, FOCAL_NEG_FLOOR, True)
    finally:
        torch.set_num_threads(threads)
    one = [native.focal_negative(part.contiguous(), 2.0, FOCAL_NEG_FLOOR, True) for part in x.split(1000)]
    assert total == pytest.approx(sum(t for t, _ in one), rel=1e-6)
    assert torch.allclose(grad, torch.cat([g for _, g in one]), rtol=1e-5, atol=1e-9)  # vector vs scalar tails


def test_non_finite_logits_go_to_the_pytorch_code(native_on):
    x = torch.randn(2, 8)
    x[1, 6] = float("nan")
    assert native.focal_negative(x, 2.0, FOCAL_NEG_FLOOR, True) is None
    assert torch.isnan(focal_negative_sum(x.clone().requires_grad_(), 2.0))
    x[1, 6] = float("inf")
    assert native.focal_negative(x, 2.0, FOCAL_NEG_FLOOR, False) is None
    x[1, 6] = 0.0
    x[1, 0] = float("nan")  # box logits are not read
    assert native.focal_negative(x, 2.0, FOCAL_NEG_FLOOR, False) is not None


def test_loading_keeps_denormals(native_on):
    # a -ffast-math object linked into a shared library can switch the process to flush-to-zero
    assert (torch.tensor(1e-40) * 1.0).item() > 0


def test_disabled_or_unbuildable_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("YOLO_NATIVE", "0")
    native.reset()
    assert native.library("focal_negative") is None
    monkeypatch.setenv("YOLO_NATIVE", "1")
    monkeypatch.setenv("YOLO_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    native.reset()
    with caplog.at_level("WARNING"):
        assert native.library("focal_negative") is None
    assert "unavailable, using the PyTorch code" in caplog.text
    x = torch.randn(4, 3, 6)
    assert focal_negative_sum(x, 2.0).item() == pytest.approx(focal_negative_sum(x.double(), 2.0).item(), rel=1e-5)
    native.reset()


def test_build_is_cached_by_source(native_on, monkeypatch, tmp_path):
    monkeypatch.setenv("YOLO_NATIVE_CACHE", str(tmp_path))
    first = native.build("focal_negative")
    assert first.parent == tmp_path and first.exists()
    mtime = first.stat().st_mtime_ns
    assert native.build("focal_negative") == first and first.stat().st_mtime_ns == mtime


# --- freeanchor's matching kernels (utils/loss/prior_match.c) -----------------------------------

def freeanchor_case(bag=9, seed=0, n=12, thr=0.6):
    from tests.test_loss_freeanchor import random_batch, three_level_loss
    loss_fn = three_level_loss(nc=3, hyp={"fa_bag_size": bag, "fa_iou_thr": thr})
    preds, t, imgs = random_batch(2, 64, 96, 3, n, seed=seed)
    return loss_fn, preds, t, imgs


def with_native(flag, monkeypatch, fn):
    monkeypatch.setenv("YOLO_NATIVE", flag)
    native.reset()
    try:
        return fn()
    finally:
        native.reset()


@pytest.mark.parametrize("bag", [1, 9, 50])
def test_bags_equal_the_pytorch_top_k(native_on, monkeypatch, bag):
    from utils.loss.freeanchor import prior_iou
    loss_fn, preds, t, imgs = freeanchor_case(bag)
    got = with_native("1", monkeypatch, lambda: loss_fn.bags(preds, t, imgs)).member
    ref = with_native("0", monkeypatch, lambda: loss_fn.bags(preds, t, imgs)).member
    iou = prior_iou(loss_fn.bags(preds, t, imgs).box_xywh_px, loss_fn.levels(preds))
    # same IoUs member by member (equal IoUs may swap priors), highest first, each prior once per bag
    assert torch.equal(iou.gather(1, got), iou.gather(1, ref))
    assert (iou.gather(1, got).diff(dim=1) <= 0).all()
    assert all(len(set(row)) == bag for row in got.tolist())


def test_bags_break_ties_by_lower_prior_index(native_on):
    # one anchor of 16 px at stride 8 on an 8 x 16 grid; a 16 px box on cell (4, 3): prior (4, 3) has
    # IoU 1, its 4 neighbours tie at 1/3, 4 diagonal ones at 1/7; a bag of 12 then takes the 3 lowest
    # -index priors of IoU 0
    from utils.loss.freeanchor import _Level
    lv = [_Level(start=0, ny=8, nx=16, stride=8.0, anchor_wh=torch.tensor([[16.0, 16.0]]))]
    member = native.fa_bags(torch.tensor([[36.0, 28.0, 16.0, 16.0]]), lv, 12)[0].tolist()
    cell = lambda j, i: j * 16 + i  # noqa: E731
    assert member[0] == cell(3, 4)
    assert member[1:5] == [cell(2, 4), cell(3, 3), cell(3, 5), cell(4, 4)]  # row-major among equals
    assert member[5:9] == [cell(2, 3), cell(2, 5), cell(4, 3), cell(4, 5)]
    assert member[9:] == [0, 1, 2]


def test_matched_pairs_and_the_loss_equal_the_pytorch_code(native_on, monkeypatch):
    from utils.loss.freeanchor import _FlatPreds
    loss_fn, preds, t, imgs = freeanchor_case(seed=3, n=24, thr=0.3)
    for p in preds:  # predictions near their prior boxes, so plenty of pairs pass IoU 0.3
        p[..., :4] *= 0.2
    flat, pri = _FlatPreds(preds), loss_fn.priors(preds)
    bags = loss_fn.bags(preds, t, imgs)
    got = with_native("1", monkeypatch, lambda: loss_fn.matched_class_prob(flat, pri, bags))
    ref = with_native("0", monkeypatch, lambda: loss_fn.matched_class_prob(flat, pri, bags))
    assert len(ref[0]) > 20 and torch.equal(got[0], ref[0])
    assert torch.allclose(got[1], ref[1], atol=1e-5)
    loss = []
    monkeypatch.setattr(loss_fn, "bags", lambda *args: bags)  # equal-IoU priors may swap between the two top-k
    for flag in ("1", "0"):
        ps = [p.clone().requires_grad_() for p in preds]
        value, _ = with_native(flag, monkeypatch, lambda: loss_fn(ps, t, imgs))
        value.backward()
        loss.append((value.item(), [p.grad for p in ps]))
    assert loss[0][0] == pytest.approx(loss[1][0], rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(loss[0][1], loss[1][1]))


# --- dw's pair terms (utils/loss/dw_pairs.c) -------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_dw_pair_kernel_equals_the_pytorch_code(native_on, monkeypatch, seed):
    from tests.test_loss_dw import make_targets, yolo_model
    from utils.loss import build_loss
    g = torch.Generator().manual_seed(seed)
    bs, nc = 2, 3
    preds = [torch.randn(bs, 3, 64 // s, 64 // s, 5 + nc, generator=g) * 1.5 for s in (8, 16, 32)]
    for p in preds:  # many decoded boxes near their cell, so IoU >= 0.5 pairs (the IoU factor) occur
        p[..., :4] *= 0.3
    targets = make_targets(g, bs, 6, nc)
    targets[1] = targets[0]
    targets[1, 2] += 0.02  # two overlapping objects of one class
    loss_fn = build_loss(yolo_model(nc=nc), {"loss": "dw"})
    cands = loss_fn.candidates(preds, targets)
    rows = loss_fn.candidate_rows(preds, cands)
    fused = loss_fn._positive_fused(rows, cands, len(targets))
    w_pos, w_neg = loss_fn.weights(loss_fn.pair_terms(rows, cands, preds), len(targets))
    assert (w_neg < 1).sum() > 5
    assert torch.allclose(fused[1], w_pos, rtol=1e-4, atol=1e-7)
    assert torch.allclose(fused[2], w_neg, rtol=1e-4, atol=1e-6)
    out = []
    for flag in ("1", "0"):
        monkeypatch.setenv("YOLO_NATIVE", flag)
        native.reset()
        ps = [p.clone().requires_grad_() for p in preds]
        loss, items = loss_fn(ps, targets, torch.zeros(bs, 3, 64, 64))
        (loss * 1.3).backward()
        out.append((items, [p.grad for p in ps]))
    native.reset()
    assert torch.allclose(out[0][0], out[1][0], rtol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(out[0][1], out[1][1]))


def test_dw_non_finite_logits_go_to_the_pytorch_code(native_on):
    from tests.test_loss_dw import make_targets, yolo_model
    from utils.loss import build_loss
    g = torch.Generator().manual_seed(5)
    preds = [torch.randn(1, 3, 64 // s, 64 // s, 8, generator=g) for s in (8, 16, 32)]
    targets = make_targets(g, 1, 3, 3)
    targets[:, 0] = 0
    loss_fn = build_loss(yolo_model(nc=3), {"loss": "dw"})
    cands = loss_fn.candidates(preds, targets)
    rows = loss_fn.candidate_rows(preds, cands)
    rows[0][0, 2] = float("nan")  # one candidate's w logit
    assert loss_fn._positive_fused(rows, cands, len(targets)) is None
    preds[0].view(-1, 8)[cands[0].flat_rows(preds[0])[0], 2] = float("nan")
    loss, _ = loss_fn([p.requires_grad_() for p in preds], targets, torch.zeros(1, 3, 64, 64))
    assert torch.isnan(loss)  # propagated as by the PyTorch code, so train.py's finiteness check sees it
