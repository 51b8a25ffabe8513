"""Every registered strategy under CPU bfloat16 autocast: finite loss and finite gradients, with
objects, without objects, and with an empty image in the batch."""
import pytest
import torch
import yaml

from models.yolo import Model
from utils.engine.hyp import load_hyp
from utils.compare.driver import hyp_for
from utils.loss import LOSSES, build_loss

TARGETS = {
    "objects": torch.tensor([[0, 0, 0.3, 0.4, 0.2, 0.3], [0, 2, 0.7, 0.6, 0.4, 0.5], [1, 1, 0.5, 0.5, 0.06, 0.08]]),
    "empty": torch.zeros(0, 6),
    "one image empty": torch.tensor([[1, 1, 0.5, 0.5, 0.3, 0.3]]),
}


def tiny_cfg():
    cfg = yaml.safe_load(open("models/yolov5n.yaml"))
    cfg["width_multiple"] = 0.125  # a narrow yolov5n: same structure, quick on a CPU
    return cfg


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("case", sorted(TARGETS))
def test_bfloat16_autocast_is_finite(name, case):
    torch.manual_seed(0)
    model = Model(tiny_cfg(), nc=3, head=LOSSES[name].head).train()
    loss_fn = build_loss(model, load_hyp(hyp_for(name)))
    imgs = torch.rand(2, 3, 64, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preds = model(imgs)
        loss, items = loss_fn(preds, TARGETS[case], imgs)
    assert torch.isfinite(loss) and torch.isfinite(items).all(), (name, case, loss, items)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
