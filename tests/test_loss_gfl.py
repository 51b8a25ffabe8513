"""Strategy ``gfl`` and the ``dfl`` head: QFL / DFL against plain-loop transcriptions of GFocal's
``gfocal_loss.py``, DFL's minimum, head shapes and decode by hand, the fused loss against a plain
autograd version, checkpoints keeping the head kind, and train -> val -> detect end to end."""
import math

import numpy as np
import pytest
import torch

import detect
import train as train_cli
import val as val_cli
from models.dfl_head import DFLDetect
from models.yolo import Model
from utils.engine import trainer
from utils.boxes import bbox_iou, xywh2xyxy
from utils.io.checkpoint import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from utils.hyp import load_hyp
from utils.loss import LOSSES, build_loss
from utils.loss.functional import distribution_focal_loss, quality_focal_loss

NC = 3


@pytest.fixture(scope="module")
def dfl_model():
    torch.manual_seed(0)
    return Model("models/yolov5n.yaml", nc=NC, head="dfl")


# ------------------------------------------------------------------ the two pure functions

def qfl_loop(logits, labels, scores, beta):
    """GFocal's quality_focal_loss, one entry at a time (float64)."""
    n, nc = logits.shape
    out = torch.zeros(n, nc, dtype=torch.float64)
    for i in range(n):
        for c in range(nc):
            x = float(logits[i, c])
            p = 1 / (1 + math.exp(-x))
            if 0 <= int(labels[i]) < nc and int(labels[i]) == c:
                s = float(scores[i])
                out[i, c] = -(s * math.log(p) + (1 - s) * math.log(1 - p)) * abs(s - p) ** beta
            else:
                out[i, c] = -math.log(1 - p) * p ** beta
    return out


def dfl_loop(logits, target):
    """GFocal's distribution_focal_loss, one row at a time (float64)."""
    out = []
    for row, t in zip(logits.tolist(), target.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        left = int(math.floor(t))
        out.append(-(row[left] - log_z) * (left + 1 - t) - (row[left + 1] - log_z) * (t - left))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("beta", [2.0, 1.5])
def test_quality_focal_loss_matches_the_reference_formula(beta):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 5, generator=g) * 3
    labels = torch.randint(-1, 6, (40,), generator=g)  # -1 and 5 (= nc) are background
    scores = torch.rand(40, generator=g)
    ours = quality_focal_loss(logits, labels, scores, beta)
    assert ours.shape == (40, 5)
    torch.testing.assert_close(ours.double(), qfl_loop(logits, labels, scores, beta), rtol=1e-5, atol=1e-6)


def test_quality_focal_loss_all_background_and_gradient():
    logits = torch.randn(6, 3, requires_grad=True)
    loss = quality_focal_loss(logits, torch.full((6,), 3), torch.zeros(6))
    p = logits.detach().sigmoid()
    torch.testing.assert_close(loss.detach(), -torch.log1p(-p) * p ** 2)
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad > 0).all()  # background pushes every logit down


def test_distribution_focal_loss_matches_the_reference_formula():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 17, generator=g) * 2
    target = torch.rand(30, generator=g) * 15.9
    target[0], target[1] = 0.0, 7.0  # integer targets: all weight on one bin
    ours = distribution_focal_loss(logits, target)
    assert ours.shape == (30,)
    torch.testing.assert_close(ours.double(), dfl_loop(logits, target), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", [3.3, 0.0, 15.9, 7.5])
def test_distribution_focal_loss_minimum_at_the_two_bins(target):
    logits = torch.zeros(1, 17, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.2)
    t = torch.tensor([target])
    for _ in range(400):
        opt.zero_grad()
        distribution_focal_loss(logits, t).sum().backward()
        opt.step()
    prob = logits.detach().softmax(1)[0]
    left = int(math.floor(target))
    expected = torch.zeros(17)
    expected[left] = left + 1 - target
    expected[left + 1] += target - left
    assert torch.allclose(prob, expected, atol=0.02), prob
    assert abs(float(prob @ torch.arange(17.0)) - target) < 0.05


# ------------------------------------------------------------------ the dfl head

def test_dfl_head_shapes_names_and_init(dfl_model):
    head = dfl_model.head
    assert isinstance(head, DFLDetect) and dfl_model.head_kind == "dfl"
    assert (head.nl, head.na, head.reg_max, head.no) == (3, 1, 16, 4 * 17 + NC)
    anchor = Model("models/yolov5n.yaml", nc=NC)
    ours = {k for k in dfl_model.state_dict() if not k.startswith("model.24.")}
    assert ours == {k for k in anchor.state_dict() if not k.startswith("model.24.")}  # YOLOv5 names
    bias = head.m[0].bias.detach()
    assert torch.allclose(bias[68:], torch.full((NC,), -math.log(99.0))) and bias[:68].abs().max() == 0
    x = torch.rand(2, 3, 64, 96)
    dfl_model.train()
    raw = dfl_model(x)
    assert [tuple(r.shape) for r in raw] == [(2, 1, 8, 12, 71), (2, 1, 4, 6, 71), (2, 1, 2, 3, 71)]
    dfl_model.eval()
    with torch.no_grad():
        pred, raw_eval = dfl_model(x)
    assert pred.shape == (2, 96 + 24 + 6, 5 + NC) and len(raw_eval) == 3
    assert (pred[..., 4] == 1).all() and ((pred[..., 5:] > 0) & (pred[..., 5:] < 1)).all()


def test_dfl_decode_one_cell_by_hand(dfl_model):
    head = dfl_model.head
    raw = [torch.zeros(1, 1, ny, nx, head.no) for ny, nx in ((4, 5), (2, 3), (1, 2))]
    cell = raw[0][0, 0, 1, 2]  # level 0 (stride 8), gj=1, gi=2: centre (20, 12) px
    cell[0 * 17 + 2] = cell[0 * 17 + 3] = 60.0  # left: half on bin 2, half on bin 3 -> 2.5 strides
    # top: all zeros -> uniform over 0..16 -> 8 strides
    cell[2 * 17 + 1] = 60.0  # right: 1 stride
    cell[3 * 17 + 4] = 60.0  # bottom: 4 strides
    cell[68 + 1] = math.log(3.0)  # class 1 score 0.75
    pred = head.decode(raw)
    row = pred[0, 1 * 5 + 2]
    x1, x2, y1, y2 = 20 - 2.5 * 8, 20 + 1 * 8, 12 - 8 * 8, 12 + 4 * 8
    expected = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0, 0.5, 0.75, 0.5]
    torch.testing.assert_close(row, torch.tensor(expected), rtol=0, atol=1e-4)


# ------------------------------------------------------------------ the loss

def random_batch(model, bs=2, img=64, seed=3):
    g = torch.Generator().manual_seed(seed)
    shapes = [(img // int(s), img // int(s)) for s in model.stride]
    preds = [(torch.randn(bs, 1, ny, nx, model.head.no, generator=g)).requires_grad_() for ny, nx in shapes]
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.6, 0.5], [0, 2, 0.3, 0.7, 0.2, 0.3], [1, 1, 0.6, 0.4, 0.3, 0.4]])
    return preds, targets, torch.zeros(bs, 3, img, img)


def plain_gfl(loss_fn, preds, matches, nc, reg_max=16):
    """GFL written with plain autograd and the public QFL / DFL functions (GFocal's loss_single)."""
    nd = 4 * (reg_max + 1)
    bs = preds[0].shape[0]
    cls_all, labels, scores = [], [], []
    box, dfl, wsum, n_pos = 0.0, 0.0, 0.0, torch.zeros(bs)
    for p, m in zip(preds, matches):
        ny, nx = p.shape[2:4]
        cls_all.append(p[..., nd:].reshape(-1, nc))
        lab = torch.full((bs * ny * nx,), nc)
        sc = torch.zeros(bs * ny * nx)
        rows = p[m.image, 0, m.gj, m.gi]
        ltrb = rows[:, :nd].reshape(-1, 4, reg_max + 1).softmax(-1) @ torch.arange(reg_max + 1.0)
        pred_xyxy = torch.cat((0.5 - ltrb[:, :2], 0.5 + ltrb[:, 2:]), 1)
        tgt = xywh2xyxy(m.box_xywh_cell)
        flat = (m.image * ny + m.gj) * nx + m.gi
        lab[flat] = m.cls
        sc[flat] = bbox_iou(pred_xyxy.detach(), tgt, xywh=False).squeeze(1)
        w = rows[:, nd:].detach().sigmoid().max(1).values
        box = box + ((1 - bbox_iou(pred_xyxy, tgt, xywh=False, GIoU=True).squeeze(1)) * w).sum()
        t = torch.cat((0.5 - tgt[:, :2], tgt[:, 2:] - 0.5), 1).clamp(0, reg_max - 0.1)
        d = distribution_focal_loss(rows[:, :nd].reshape(-1, reg_max + 1), t.reshape(-1))
        dfl = dfl + (d * w[:, None].expand(-1, 4).reshape(-1)).sum() / 4
        wsum = wsum + w.sum()
        n_pos += torch.bincount(m.image, minlength=bs)
        labels.append(lab)
        scores.append(sc)
    qfl = quality_focal_loss(torch.cat(cls_all), torch.cat(labels), torch.cat(scores)).sum() / n_pos.clamp(min=1).sum()
    wsum = max(float(wsum), 1.0)
    return torch.stack((qfl, 2.0 * box / wsum, 0.25 * dfl / wsum))


def test_loss_equals_plain_autograd_version_value_and_gradient(dfl_model):
    loss_fn = build_loss(dfl_model, {"loss": "gfl"})
    assert loss_fn.names == ("qfl", "box", "dfl") and LOSSES["gfl"].head == "dfl"
    preds, targets, imgs = random_batch(dfl_model)
    matches = loss_fn.assign(preds, targets, imgs)
    assert sum(len(m) for m in matches) > 0 and all((m.anchor == 0).all() for m in matches)
    loss, items = loss_fn(preds, targets, imgs)
    grads = torch.autograd.grad(loss, preds)
    ref_items = plain_gfl(loss_fn, preds, matches, NC)
    torch.testing.assert_close(items, ref_items.detach(), rtol=1e-5, atol=1e-6)
    ref_grads = torch.autograd.grad(ref_items.sum() * 2, preds)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_loss_without_objects_is_background_qfl_only(dfl_model):
    loss_fn = build_loss(dfl_model, {"loss": "gfl"})
    preds, _, imgs = random_batch(dfl_model)
    loss, items = loss_fn(preds, torch.zeros((0, 6)), imgs)
    assert torch.isfinite(loss) and items[0] > 0 and items[1] == 0 and items[2] == 0
    loss.backward()
    assert preds[0].grad[..., 68:].abs().sum() > 0 and preds[0].grad[..., :68].abs().sum() == 0


def test_loss_refuses_the_wrong_head_and_reg_max(dfl_model):
    with pytest.raises(ValueError, match="dfl"):
        build_loss(Model("models/yolov5n.yaml", nc=NC), {"loss": "gfl"})
    with pytest.raises(ValueError, match="reg_max"):
        build_loss(dfl_model, {"loss": "gfl", "reg_max": 8})


# ------------------------------------------------------------------ checkpoints and end to end

def test_dfl_checkpoint_keeps_its_head(dfl_model, tmp_path):
    path = save_checkpoint(make_checkpoint(dfl_model), tmp_path / "dfl.pt")
    assert torch.load(path, weights_only=True)["head"] == "dfl"
    with pytest.raises(CheckpointError, match="head 'dfl' but head 'anchor'"):
        load_checkpoint(path, head="anchor")
    model, meta = load_checkpoint(path)
    assert meta["head"] == "dfl" and model.head_kind == "dfl" and isinstance(model.head, DFLDetect)
    x = torch.rand(1, 3, 64, 64)
    dfl_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], dfl_model(x)[0])


def test_train_val_detect_end_to_end_with_hyp_gfl(tiny_data, tmp_path):
    assert load_hyp("hyp.gfl.yaml")["loss"] == "gfl"
    opt = train_cli.parse_opt(["--data", str(tiny_data), "--epochs", "1", "--img", "64", "--batch-size", "4",
                               "--workers", "0", "--project", str(tmp_path / "train"), "--quiet", "--noplots",
                               "--hyp", "hyp.gfl.yaml"])
    res = trainer.train(opt)
    run = tmp_path / "train" / "exp"
    weights = run / "weights" / "best.pt"
    assert weights.is_file() and (run / "weights" / "last.pt").is_file()
    ckpt = torch.load(weights, weights_only=True)
    assert ckpt["head"] == "dfl" and ckpt["hyp"]["loss"] == "gfl"
    header = (run / "results.csv").read_text().splitlines()[0].replace(" ", "").split(",")
    assert header[1:4] == ["train/qfl_loss", "train/box_loss", "train/dfl_loss"]
    rows = np.loadtxt(run / "results.csv", delimiter=",", skiprows=1, ndmin=2)
    assert np.isfinite(rows).all() and len(rows) == 1
    assert 0.0 <= res["map"] <= res["map50"] <= 1.0

    vres = val_cli.run(val_cli.parse_opt(["--weights", str(weights), "--data", str(tiny_data), "--img", "64",
                                          "--batch-size", "4", "--workers", "0", "--loss", "--quiet",
                                          "--project", str(tmp_path / "val")]))
    assert 0.0 <= vres["map"] <= 1.0 and vres["loss"].shape == (3,) and torch.isfinite(vres["loss"]).all()

    images = sorted((tiny_data.parent / "images" / "val").iterdir())[:2]
    save_dir = detect.run(weights=weights, source=[str(p) for p in images], imgsz=[64], conf_thres=0.0, max_det=5,
                          device="cpu", save_txt=True, project=tmp_path / "detect")
    for p in images:
        assert (save_dir / p.name).is_file()
        assert (save_dir / "labels" / f"{p.stem}.txt").is_file()
