"""--optimizer auto (ultralytics' rule) and the warnings for schedules that learn next to nothing from scratch."""
import pytest

from utils.hyp import load_hyp
from utils.engine.optim import auto_optimizer, schedule_warnings


@pytest.mark.parametrize("n_images, batch, epochs, nc, name, lr0", [
    (160, 16, 30, 3, "AdamW", 0.001429),      # ceil(160 / 64) * 30 = 90 steps; 0.002 * 5 / (4 + 3)
    (400, 8, 18, 5, "AdamW", 0.001111),       # the built-in dataset's size
    (64_000, 16, 10, 80, "AdamW", 0.000119),  # exactly 10,000 steps: still AdamW (SGD only above)
    (64_064, 16, 10, 80, "SGD", 0.01),        # 1,001 * 10 = 10,010 steps
    (1000, 128, 100, 3, "AdamW", 0.001429),   # a batch above nbs counts steps of the batch: 8 * 100
])
def test_auto_optimizer_follows_ultralytics(n_images, batch, epochs, nc, name, lr0):
    hyp = load_hyp("hyp/hyp.scratch.yaml")
    got, new = auto_optimizer(hyp, n_images=n_images, batch_size=batch, epochs=epochs, nc=nc)
    assert got == name and new["lr0"] == lr0
    assert new["momentum"] == 0.9 and new["warmup_bias_lr"] == 0.0
    assert {k: v for k, v in new.items() if k not in ("lr0", "momentum", "warmup_bias_lr")} == \
        {k: v for k, v in hyp.items() if k not in ("lr0", "momentum", "warmup_bias_lr")}


def test_schedule_warnings():
    # the run: 11 batches of 16 per epoch, 30 epochs, nominal batch 64, warm-up max(3 epochs, 100 iterations)
    warmup, steps = schedule_warnings(epochs=30, batches_per_epoch=11, warmup_iters=100, accumulate=4)
    assert warmup.startswith("warm-up takes 100 of the run's 330 iterations (9.1 of 30 epochs")
    assert steps.startswith("2.8 optimiser steps per epoch (11 batches, one step per 4")
    assert "--optimizer auto" in warmup and "--optimizer auto" in steps
    # the built-in dataset's train_defaults: 50 batches of 8, nbs 8, 18 epochs, warm-up 3 epochs
    assert schedule_warnings(epochs=18, batches_per_epoch=50, warmup_iters=150, accumulate=1) == []
    # exactly a quarter and exactly 10 steps pass
    assert schedule_warnings(epochs=4, batches_per_epoch=100, warmup_iters=100, accumulate=10) == []


def test_fewer_than_one_step_per_epoch_is_one_warning():
    # 2 batches of 4 per epoch, nbs 64: one optimizer step per 16 batches; said once, as such
    (steps,) = schedule_warnings(epochs=200, batches_per_epoch=2, warmup_iters=100, accumulate=16, nbs=64,
                                 batch_size=4)
    assert steps == ("hyp nbs 64 / --batch-size 4: one optimizer step per 16 batches after warm-up, but an epoch "
                     "has 2 batches: fewer than one step per epoch; lower nbs")
