"""Strategy ``tal`` (YOLOv8's objective on the dfl head) and the ``assigner`` hyp key of the dfl-head losses:
the loss against a dense transcription of ultralytics' ``v8DetectionLoss`` (value and gradient), the
assigner swap under either loss, one-line errors for bad ``assigner`` values, and training end to end
(tal; gfl loss + tal assigner; tal loss + atss assigner)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import train as train_cli
from models.yolo import Model
from utils.assign.atss import atss_assign
from utils.assign.tal import dense_predictor, tal_assign
from utils.boxes import bbox_iou, xywh2xyxy
from utils.engine import trainer
from utils.hyp import HYP_DIR, HypError, load_hyp
from utils.loss import build_loss

NC = 3
TARGETS = torch.tensor([[0, 0, 0.30, 0.40, 0.30, 0.35], [0, 2, 0.62, 0.55, 0.45, 0.50], [1, 1, 0.50, 0.50, 0.20, 0.25],
                        [1, 0, 0.52, 0.48, 0.25, 0.20]])


@pytest.fixture(scope="module")
def dfl_model():
    torch.manual_seed(0)
    return Model("models/yolov5n.yaml", nc=NC, head="dfl").train()


def head_outputs(model, bs=2, hw=(96, 128), seed=0):
    """Seeded normal logits shaped like the dfl head's training output, class logits near the prior."""
    g = torch.Generator().manual_seed(seed)
    det = model.model[-1]
    out = []
    for s in det.stride.tolist():
        x = torch.randn(bs, 1, hw[0] // int(s), hw[1] // int(s), det.no, generator=g)
        x[..., det.n_dist:] -= 2.0
        out.append(x.requires_grad_())
    return out, torch.zeros(bs, 3, *hw)


def dense_v8_loss(loss_fn, preds, assignment, hyp):
    """``v8DetectionLoss`` written densely: a (bs, N, nc) target-score tensor, BCE summed over it, CIoU and
    DFL over the foreground cells weighted by their target, all / max(sum of targets, 1), gains, x bs."""
    bs, n_dist, reg_max = preds[0].shape[0], loss_fn.n_dist, loss_fn.reg_max
    cls_logits = torch.cat([p[..., n_dist:].reshape(bs, -1, NC) for p in preds], 1).float()
    target = torch.zeros_like(cls_logits)
    box_terms, dfl_terms = [], []
    offset = 0
    for p, m in zip(preds, assignment):
        _, _, ny, nx, no = p.shape
        cell = offset + m.gj * nx + m.gi
        target[m.image, cell, m.cls] = m.weight
        row = p[m.image, 0, m.gj, m.gi].float()  # (n, no)
        ltrb = row[:, :n_dist].view(-1, 4, reg_max + 1).softmax(-1) @ torch.arange(reg_max + 1.0)
        pred_xyxy = torch.cat((0.5 - ltrb[:, :2], 0.5 + ltrb[:, 2:]), 1)
        tgt_xyxy = xywh2xyxy(m.box_xywh_cell)
        ciou = bbox_iou(pred_xyxy, tgt_xyxy, xywh=False, CIoU=True).squeeze(1)
        box_terms.append(((1 - ciou) * m.weight).sum())
        dist = torch.cat((0.5 - tgt_xyxy[:, :2], tgt_xyxy[:, 2:] - 0.5), 1).clamp(0, reg_max - 0.01)
        left = dist.long()
        wl, wr = left + 1 - dist, dist - left
        logits = row[:, :n_dist].reshape(-1, reg_max + 1)
        dfl = (F.cross_entropy(logits, left.view(-1), reduction="none") * wl.view(-1)
               + F.cross_entropy(logits, left.view(-1) + 1, reduction="none") * wr.view(-1)).view(-1, 4).mean(1)
        dfl_terms.append((dfl * m.weight).sum())
        offset += ny * nx
    norm = max(target.sum(), 1)
    lcls = F.binary_cross_entropy_with_logits(cls_logits, target, reduction="sum") / norm
    lbox, ldfl = sum(box_terms) / norm, sum(dfl_terms) / norm
    return (lbox * hyp["box"] + lcls * hyp["cls"] + ldfl * hyp["dfl"]) * bs


def test_loss_equals_a_dense_v8_transcription_value_and_gradient(dfl_model):
    hyp = load_hyp("hyp.tal.yaml")
    loss_fn = build_loss(dfl_model, hyp)
    preds, imgs = head_outputs(dfl_model)
    loss, items = loss_fn(preds, TARGETS, imgs)
    assignment = loss_fn.last_assignment
    assert assignment.num_rows > 0 and all(m.weight is not None for m in assignment)
    assert loss_fn.names == ("box", "cls", "dfl") and items.shape == (3,)
    grads = torch.autograd.grad(loss, preds)
    want = dense_v8_loss(loss_fn, preds, assignment, hyp)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(grads, torch.autograd.grad(want, preds)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_without_objects_only_the_background_bce_remains(dfl_model):
    loss_fn = build_loss(dfl_model, load_hyp("hyp.tal.yaml"))
    preds, imgs = head_outputs(dfl_model)
    loss, items = loss_fn(preds, torch.zeros(0, 6), imgs)
    background = sum(F.softplus(p[..., loss_fn.n_dist:]).sum() for p in preds) * 0.5
    assert items[0] == 0 and items[2] == 0
    torch.testing.assert_close(loss, background * 2)


def dense_predictions(loss_fn, preds):
    """Every cell's class probabilities (bs, N, nc) and decoded box (bs, N, 4) xyxy pixels."""
    scores, boxes = [], []
    for p, s in zip(preds, loss_fn.stride.tolist()):
        bs, _, ny, nx, no = p.shape
        flat = p.detach().reshape(bs, ny * nx, no)
        gy, gx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        centre = torch.stack((gx, gy), -1).view(-1, 2) + 0.5
        boxes.append(loss_fn.box_coder.decode(flat[..., :loss_fn.n_dist], centre) * s)
        scores.append(flat[..., loss_fn.n_dist:].sigmoid())
    return torch.cat(scores, 1), torch.cat(boxes, 1)


def rows_of(levels):
    return [(m.image.tolist(), m.gj.tolist(), m.gi.tolist(), m.target.tolist()) for m in levels]


@pytest.mark.parametrize("loss,assigner", [("gfl", "tal"), ("tal", "atss"), ("gfl", "atss"), ("tal", "tal")])
def test_assigner_key_picks_the_rule_under_either_loss(dfl_model, loss, assigner):
    hyp = load_hyp({"loss": loss, "assigner": assigner})
    loss_fn = build_loss(dfl_model, hyp)
    preds, imgs = head_outputs(dfl_model)
    loss_value, _ = loss_fn(preds, TARGETS, imgs)
    assert torch.isfinite(loss_value)
    shapes = [(p.shape[2], p.shape[3]) for p in preds]
    strides = dfl_model.stride.tolist()
    if assigner == "atss":
        want = atss_assign(TARGETS, shapes, strides, (96, 128))
    else:  # every cell's scores and boxes decoded densely here, against the strategy's per-pair reads
        scores, boxes = dense_predictions(loss_fn, preds)
        want = tal_assign(TARGETS, shapes, strides, (96, 128), dense_predictor(scores, boxes), len(imgs))
    assert rows_of(loss_fn.last_assignment) == rows_of(want)


@pytest.mark.parametrize("loss", ["gfl", "tal"])
def test_default_assigner_of_each_loss(loss):
    from utils.loss import LOSSES

    assert LOSSES[loss].Hyp().assigner == {"gfl": "atss", "tal": "tal"}[loss]


@pytest.mark.parametrize("hyp,words", [
    ({"loss": "tal", "assigner": "tall"}, ["'assigner'", "unknown rule 'tall'", "did you mean 'tal'", "atss, tal"]),
    ({"loss": "gfl", "assigner": "yolov5"}, ["'assigner'", "rule 'yolov5'", "anchor", "simota, atss, tal, max_iou"]),
    ({"loss": "gfl", "assigner": 3}, ["'assigner'", "unknown rule 3"]),
    ({"loss": "dw", "assigner": "atss"}, ["'assigner'", "'dw'", "it takes dw"]),
    ({"loss": "gfl", "assigner": "tal", "atss_topk": 9}, ["'atss_topk'", "rule 'atss'", "assigner: atss"]),
    ({"loss": "ssd", "tal_topk": 10}, ["'tal_topk'", "'gfl'", "'tal'"]),
    ({"loss": "tal", "tal_topk": 0}, ["'tal_topk'", "(0, inf)"]),  # ranges beside the rule's Hyp (utils/assign/tal.py)
    ({"loss": "tal", "box": -1.0}, ["'box'", "[0, inf)"]),
])
def test_bad_assigner_is_one_line_naming_the_key(hyp, words):
    with pytest.raises(HypError) as e:
        load_hyp(hyp)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.parametrize("file,assigner", [("hyp.tal.yaml", None), ("hyp.gfl.yaml", "tal"), ("hyp.tal.yaml", "atss")])
def test_trains_end_to_end(tiny_data, tmp_path, file, assigner):
    """hyp.tal.yaml trains; gfl-loss + tal-assigner and tal-loss + atss-assigner too. The checkpoint
    keeps the assigner."""
    from utils.loss import with_assigner

    spec = yaml.safe_load((HYP_DIR / file).read_text())
    if assigner:  # the other rule's keys (hyp.gfl.yaml lists ATSS's) left out, as compare.py does
        spec = with_assigner(spec, assigner)
    hyp_file = tmp_path / "hyp.yaml"
    hyp_file.write_text(yaml.safe_dump(spec))
    opt = train_cli.parse_opt(["--data", str(tiny_data), "--epochs", "1", "--img", "64", "--batch-size", "4",
                               "--workers", "0", "--project", str(tmp_path / "train"), "--quiet", "--noplots",
                               "--hyp", str(hyp_file)])
    res = trainer.train(opt)
    run = tmp_path / "train" / "exp"
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert ckpt["head"] == "dfl" and ckpt["hyp"]["loss"] == spec["loss"]
    assert ckpt["hyp"]["assigner"] == (assigner or "tal")
    rows = np.loadtxt(run / "results.csv", delimiter=",", skiprows=1, ndmin=2)
    assert np.isfinite(rows).all() and 0.0 <= res["map"] <= res["map50"] <= 1.0


# ------------------------------------------------------------------ loss + assigner as one strategy name

def test_strategy_names_with_an_assigner():
    from utils.loss import split_strategy, strategy_label

    assert split_strategy("gfl+tal") == ("gfl", "tal") and split_strategy("tal") == ("tal", None)
    assert strategy_label("gfl", "tal") == "gfl+tal" and strategy_label("gfl", "atss") == "gfl"
    assert strategy_label("tal", "tal") == "tal" and strategy_label("yolov5") == "yolov5"
    assert split_strategy("yolov5+tal") == ("yolov5", "tal")
    with pytest.raises(ValueError, match="it takes dw"):
        split_strategy("dw+tal")
    with pytest.raises(ValueError, match="'assigner': unknown rule 'atts'"):
        split_strategy("gfl+atts")


def test_compare_trains_loss_plus_assigner_and_labels_its_rows(tmp_path):
    import json

    from utils.compare.driver import hyp_for, plan
    from utils.compare.runs import read_run

    hyp_file = hyp_for("gfl+tal", tmp_path)
    assert hyp_file.parent == tmp_path and load_hyp(hyp_file)["assigner"] == "tal"
    assert load_hyp(hyp_file)["loss"] == "gfl" and hyp_for("gfl") == HYP_DIR / "hyp.gfl.yaml"
    cmd, default = plan(tmp_path, ["gfl+tal", "gfl+atss"], [0], ["--epochs", "1"], 0)
    assert f"--hyp {hyp_file}" in cmd and "gfl+tal-s0" in cmd
    assert f"--hyp {HYP_DIR / 'hyp.gfl.yaml'}" in default and "gfl-s0" in default  # gfl's own rule is gfl
    # a finished run reads back as the row 'gfl+tal' (from its hyp.yaml), the default rule as 'gfl'
    for assigner, label in (("tal", "gfl+tal"), ("atss", "gfl")):
        run = tmp_path / assigner
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"loss": "gfl", "seed": 0, "epochs": 1, "map50": 0.5, "map": 0.3,
                                                      "per_class": {}}))
        (run / "hyp.yaml").write_text(yaml.safe_dump({"loss": "gfl", "assigner": assigner}))
        assert read_run(run).loss == label


def test_show_assign_panel_title_names_the_assigner():
    from utils.compare.driver import hyp_for
    from utils.eval import assign_view as av

    s = av.strategy_for("gfl+tal", hyp_for("gfl"), None, NC, "models/yolov5n.yaml", 160)
    assert s.loss.hyp.assigner == "tal" and s.title == "gfl+tal (assigner tal)"
    assert av.strategy_for("tal", hyp_for("tal"), None, NC, "models/yolov5n.yaml", 160).title == "tal (assigner tal)"
