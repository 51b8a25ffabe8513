"""Every registered strategy under CPU bfloat16 autocast: finite loss and finite gradients, with
objects, without objects, and with an empty image in the batch; and a training step of each under
``--precision bf16`` (utils.engine.step.Stepper): float32 losses, weights, BatchNorm statistics,
optimiser state and EMA, no GradScaler."""
import pytest
import torch
import yaml

from models.yolo import Model
from utils.engine.ema import ModelEMA
from utils.hyp import TRAINER_DEFAULTS, load_hyp
from utils.core.precision import resolve_precision
from utils.engine.step import make_stepper
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


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_training_steps_keep_float32_state(name):
    torch.manual_seed(0)
    precision = resolve_precision("bf16", torch.device("cpu"), cpu_feature="avx512_bf16")
    model = precision.prepare(Model(tiny_cfg(), nc=3, head=LOSSES[name].head).train())
    hyp = {**TRAINER_DEFAULTS, **load_hyp(hyp_for(name))}
    ema = ModelEMA(model)
    stepper = make_stepper(model, build_loss(model, hyp), hyp, optimizer="SGD", batch_size=2, epochs=1,
                           batches_per_epoch=1, ema=ema, precision=precision)
    stepper.last_opt_step, stepper.accumulate = -10, 1  # step the optimiser after every batch
    imgs = (torch.rand(2, 3, 64, 96) * 255).to(torch.uint8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for ni in (200, 201):  # past the warm-up: the learning rate is not 0
        res = stepper.step(imgs, TARGETS["objects"], ni, 0)
        assert res.finite and res.stepped and res.loss.dtype == torch.float32 and res.items.dtype == torch.float32
    assert not stepper.scaler.is_enabled()
    state = {**model.state_dict(), **{f"ema.{k}": v for k, v in ema.ema.state_dict().items()}}
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    assert all(v.dtype == torch.float32 for s in stepper.optimizer.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))
    moved = [k for k, v in model.state_dict().items() if "running_mean" in k and not torch.equal(v, before[k])]
    assert moved, "BatchNorm statistics did not update"
    assert ema.updates == 2 and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
