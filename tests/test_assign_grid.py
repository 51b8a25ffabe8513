"""The loss x assigner grid: every (loss, rule) pair a loss declares trains a finite step with gradients on
the head it trains, and every other pair is refused when the hyp is read, in one line naming the rules the
loss takes. ``ota`` is ``yolov5`` + ``simota`` to the bit (values and gradients)."""
from pathlib import Path

import pytest
import torch

from models.yolo import Model
from utils.assign import ASSIGNERS
from utils.hyp import HypError, load_hyp
from utils.loss import LOSSES, build_loss, canonical_strategies, split_strategy

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(loss, rule) for loss, cls in LOSSES.items() for rule in cls.assigners()]
REFUSED = [(loss, rule) for loss, cls in LOSSES.items() for rule in ASSIGNERS if rule not in cls.assigners()]
# two images of 64 px: a large, a small and an off-centre object, and one image-1 object
TARGETS = torch.tensor([[0, 0, 0.50, 0.50, 0.60, 0.50], [0, 1, 0.20, 0.25, 0.15, 0.20],
                        [0, 2, 0.80, 0.70, 0.30, 0.45], [1, 1, 0.40, 0.60, 0.35, 0.25]])
_models: dict[str, Model] = {}


def model_for(head: str) -> Model:
    if head not in _models:
        torch.manual_seed(0)
        _models[head] = Model(ROOT / "models" / "yolov5n.yaml", nc=3, head=head).train()
    return _models[head]


def test_at_least_twenty_pairs_and_every_rule_is_used():
    assert len(PAIRS) >= 20
    assert {rule for _, rule in PAIRS} == set(ASSIGNERS)


@pytest.mark.parametrize("loss,rule", PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_pair_trains_a_finite_step_with_gradients(loss, rule):
    cls = LOSSES[loss]
    model = model_for(cls.head)
    model.zero_grad()
    hyp = load_hyp({"loss": loss, "assigner": rule})
    assert hyp["assigner"] == rule
    loss_fn = build_loss(model, cls.train_hyp(hyp, nl=3, nc=3, imgsz=64))
    assert type(loss_fn.rule) is ASSIGNERS[rule]
    torch.manual_seed(1)
    imgs = torch.rand(2, 3, 64, 64)
    total, items = loss_fn(model(imgs), TARGETS, imgs)
    total.backward()
    assert torch.isfinite(total) and total > 0 and torch.isfinite(items).all() and len(items) == len(cls.names)
    assert loss_fn.last_assignment.num_rows > 0
    assert {int(t) for m in loss_fn.last_assignment for t in m.target} <= set(range(len(TARGETS)))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    head_grad = model.model[-1].m[0].weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0


@pytest.mark.parametrize("loss,rule", REFUSED, ids=[f"{a}+{b}" for a, b in REFUSED])
def test_other_pairs_are_refused_in_one_line_naming_the_rules_taken(loss, rule):
    with pytest.raises(HypError) as e:
        load_hyp({"loss": loss, "assigner": rule})
    msg = str(e.value)
    assert "\n" not in msg and "'assigner'" in msg and f"it takes {', '.join(LOSSES[loss].assigners())}" in msg
    with pytest.raises(ValueError, match="it takes"):
        split_strategy(f"{loss}+{rule}")


def test_pair_names_as_compare_reads_them():
    names = ["yolov5", "yolov5+simota", "yolov5+atss", "yolov5+tal", "gfl", "tal", "gfl+atss", "ota+simota"]
    assert canonical_strategies(names) == ["yolov5", "yolov5+simota", "yolov5+atss", "yolov5+tal", "gfl", "tal",
                                           "gfl", "ota"]


def test_ota_is_yolov5_with_simota_to_the_bit():
    """Equal loss values and equal gradients on random batches, several seeds and shapes."""
    model = model_for("anchor")
    for seed, (h, w) in zip(range(3), [(64, 64), (64, 96), (96, 64)]):
        g = torch.Generator().manual_seed(seed)
        n = 12
        targets = torch.cat((torch.randint(0, 2, (n, 1), generator=g).float(),
                             torch.randint(0, 3, (n, 1), generator=g).float(),
                             torch.rand(n, 2, generator=g) * 0.8 + 0.1, torch.rand(n, 2, generator=g) * 0.4 + 0.05), 1)
        preds = [torch.randn(2, 3, h // s, w // s, 8, generator=g) * 2 for s in (8, 16, 32)]
        imgs = torch.zeros(2, 3, h, w)
        out = []
        for hyp in ({"loss": "ota"}, {"loss": "yolov5", "assigner": "simota"}):
            leaves = [p.clone().requires_grad_() for p in preds]
            fn = build_loss(model, load_hyp(hyp))
            total, items = fn(leaves, targets, imgs)
            total.backward()
            out.append((total.detach(), items, [p.grad for p in leaves], fn.last_assignment))
        (a, ia, ga, ra), (b, ib, gb, rb) = out
        assert torch.equal(a, b) and torch.equal(ia, ib) and all(torch.equal(x, y) for x, y in zip(ga, gb))
        assert ra.num_rows == rb.num_rows > 0


def test_show_assign_draws_every_pair():
    """show_assign's strategies (utils/eval/assign_view.py) for every ``loss+rule``: the rows of the very
    call the loss trained on, titled with the rule."""
    from utils.compare.driver import hyp_for
    from utils.eval import assign_view as av

    imgs = torch.rand(2, 3, 64, 64)
    for loss, rule in PAIRS:
        base = model_for(LOSSES[loss].head)
        s = av.strategy_for(f"{loss}+{rule}", hyp_for(loss), base, 3, ROOT / "models" / "yolov5n.yaml", 64)
        assert s.model is base and s.title == f"{loss}+{rule} (assigner {rule})"
        result = av.positives(s, imgs, TARGETS)
        assert result is s.loss.last_assignment and result.num_rows > 0 and result.row_kind == s.loss.rule.row_kind
    for m in _models.values():  # strategy_for put them in eval mode
        m.train()
