"""Trainer parity with the official YOLOv5 train.py, step by step.

../shared/reference/official_trace/ (its README says how it was recorded) holds the official run's
weights at its first batch, 40 of its batches (yolov5n, 3 classes, 160 px, batch 8, 26 batches per
epoch, so the trace crosses an epoch boundary) and what happened at each iteration. The replay feeds
them to ``utils.engine.step.Stepper``, the object whose ``step`` train.py's epoch loop calls for every
batch, built by ``make_stepper`` as train.py builds it. Pinned:

- for all 40 iterations, every learning rate and momentum of every parameter group, whether the
  optimiser stepped and the EMA update count: warm-up, accumulation to the nominal batch of 64 and
  the epoch boundary are logic, so they must match (relative 1e-9: the float rounding of np.interp);
- iteration 0: loss and items to relative 1e-5, weights and EMA after it to relative 1e-4;
- later losses loosely (LATER_LOSS_RTOL): float rounding grows chaotically through training, so an
  exact comparison would test the machine's summation order, not the loop.

The replay runs once per module: 10.7 s of CPU time for the whole file (OMP_NUM_THREADS=1 on the
2-core development machine, measured with /usr/bin/time; 30 s wall there under a load average of 6.5).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models.yolo import Model
from utils.engine.ema import ModelEMA
from utils.hyp import load_hyp
from utils.engine.step import Stepper, make_stepper
from utils.loss import build_loss, loss_class

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "reference" / "official_trace"
pytestmark = pytest.mark.skipif(not (TRACE / "steps.json").exists(),
                                reason=f"official trace absent at {TRACE} (needs ../shared next to the repo)")

# Measured over the 40 iterations: our loss vs the official one differs by at most 1.4 % (iteration 25),
# and our own loop run with 1 and with 2 torch threads differs by up to 1.0 % (iteration 36), so the
# spread is float chaos of the same size as the thread-count effect. 3 % leaves room for other CPUs'
# summation orders while still failing a loop that trains differently (e.g. a wrong loss gain).
LATER_LOSS_RTOL = 0.03
# The trace's README: weights of two thread counts differ by ~2e-6 after iteration 0, ~1e-4 after
# iteration 3. Losses computed from weights up to iteration 2 are held tightly (measured <= 1.2e-7).
TIGHT_UNTIL = 3
TRAINER_KEYS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr")


@dataclass
class Replay:
    """What our loop did on the recorded batches, one entry per iteration, groups in the official order."""

    stepper: Stepper
    order: list[int]  # our group index of each official group
    loss: list[float] = field(default_factory=list)
    items: list[list[float]] = field(default_factory=list)
    lr: list[list[float]] = field(default_factory=list)
    momentum: list[list[float]] = field(default_factory=list)
    stepped: list[bool] = field(default_factory=list)
    ema_updates: list[int] = field(default_factory=list)
    after_first: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # model / ema summaries
    boundary_grads: tuple[bool, bool] = (False, False)  # gradients held before / after the epoch-1 start


def official_group_order(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[int]:
    """Our group indices in the official order: biases, conv weights (decay), BatchNorm weights."""
    names = {id(p): n for n, p in model.named_parameters()}
    kind = {}
    for j, group in enumerate(optimizer.param_groups):
        pnames = [names[id(p)] for p in group["params"]]
        if all(n.endswith(".bias") for n in pnames):
            kind["bias"] = j
        elif all(isinstance(model.get_submodule(n.rsplit(".", 1)[0]), nn.BatchNorm2d) for n in pnames):
            kind["bn"] = j
        else:
            kind["weight"] = j
    return [kind["bias"], kind["weight"], kind["bn"]]


def summary(module: nn.Module) -> dict[str, tuple[float, float]]:
    """Per state_dict entry: (sum, sum of absolute values), in float64."""
    return {k: (float(v.double().sum()), float(v.double().abs().sum())) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def trace() -> dict[str, Any]:
    return json.loads((TRACE / "steps.json").read_text())


@pytest.fixture(scope="module")
def replay(trace: dict[str, Any]) -> Replay:
    """Our yolov5n from the official first-batch weights, trained on the 40 recorded batches the way
    trainer.train_epoch does it (zero_grad at an epoch's start, the LR schedule advanced at its end)."""
    s = trace["settings"]
    model = Model(str(ROOT / "models" / "yolov5n.yaml"), nc=3)
    model.load_state_dict(torch.load(TRACE / "init.pt", weights_only=True), strict=True)
    hyp = load_hyp(ROOT / "hyp" / "hyp.scratch.yaml")
    compute_loss = build_loss(model, {**hyp, **trace["hyp_scaled_for_the_loss"]})
    stepper = make_stepper(model, compute_loss, hyp, optimizer=s["optimizer"], batch_size=s["batch_size"],
                           epochs=s["epochs"], batches_per_epoch=s["batches_per_epoch"], ema=ModelEMA(model))
    rec = Replay(stepper, official_group_order(model, stepper.optimizer))
    batches = np.load(TRACE / "batches.npz")
    for ni in range(len(trace["steps"])):
        epoch, i = divmod(ni, s["batches_per_epoch"])
        if i == 0:
            held = any(p.grad is not None and p.grad.any() for p in model.parameters())
            if epoch:
                stepper.end_epoch()
            stepper.start_epoch()
            if epoch == 1:
                rec.boundary_grads = held, any(p.grad is not None and p.grad.any() for p in model.parameters())
        imgs = torch.from_numpy(batches[f"imgs_{ni:02d}"])
        res = stepper.step(imgs, torch.from_numpy(batches[f"targets_{ni:02d}"]), ni, epoch)
        groups = [stepper.optimizer.param_groups[j] for j in rec.order]
        rec.loss.append(float(res.loss))
        rec.items.append(res.items.tolist())
        rec.lr.append([g["lr"] for g in groups])
        rec.momentum.append([g["momentum"] for g in groups])
        rec.stepped.append(res.stepped)
        rec.ema_updates.append(stepper.ema.updates)
        if ni == 0:
            rec.after_first = {"model": summary(model), "ema": summary(stepper.ema.ema)}
    return rec


def test_settings_match_ours(trace):
    """The recorded hyp is ours (hyp.scratch.yaml), and our train.py gain scaling gives its loss gains."""
    s, recorded = trace["settings"], trace["hyp_scaled_for_the_loss"]
    hyp = load_hyp(ROOT / "hyp" / "hyp.scratch.yaml")
    assert {k: hyp[k] for k in TRAINER_KEYS} == {k: recorded[k] for k in TRAINER_KEYS}
    assert hyp["nbs"] == s["nbs"] == 64
    ours = loss_class(hyp["loss"]).train_hyp(hyp, nl=3, nc=3, imgsz=s["imgsz"], label_smoothing=0.0)
    assert {k: ours[k] for k in ("box", "obj", "cls")} == pytest.approx(
        {k: recorded[k] for k in ("box", "obj", "cls")}, rel=1e-12)


def test_parameter_groups_match_the_official_ones(trace, replay):
    groups = [replay.stepper.optimizer.param_groups[j] for j in replay.order]
    for recorded, group in zip(trace["param_groups"], groups):
        n, decay = re.search(r"\((\d+) tensors, (no decay|decay)\)", recorded).groups()
        assert len(group["params"]) == int(n), recorded
        assert (group["weight_decay"] > 0) == (decay == "decay"), recorded


def test_schedule_steps_and_ema_updates_for_all_iterations(trace, replay):
    steps = trace["steps"]
    assert len(steps) == len(replay.lr) == 40
    for ni, rec in enumerate(steps):
        assert rec["ni"] == ni
        assert replay.lr[ni] == pytest.approx(rec["lr"], rel=1e-9, abs=1e-15), f"lr at iteration {ni}"
        assert replay.momentum[ni] == pytest.approx(rec["momentum"], rel=1e-9), f"momentum at iteration {ni}"
        assert replay.stepped[ni] == rec["optimizer_step"], f"optimizer_step at iteration {ni}"
        assert replay.ema_updates[ni] == rec["ema_updates"], f"ema_updates at iteration {ni}"
    # the trace covers both regimes: every batch stepping early in warm-up, then accumulation
    assert sum(replay.stepped) == 20 and not all(replay.stepped[8:])
    # Iteration 25 (the last of epoch 0) did not step; YOLOv5 drops its gradients when epoch 1 starts.
    # The losses cannot show this (its effect is below the float chaos by then), so it is pinned here.
    assert replay.boundary_grads == (True, False)


def test_first_iteration_loss_items_and_weights(trace, replay):
    first = trace["steps"][0]
    assert replay.loss[0] == pytest.approx(first["loss"], rel=1e-5)
    assert replay.items[0] == pytest.approx(first["items"], rel=1e-5)
    for which in ("model", "ema"):
        ours, recorded = replay.after_first[which], first[which]
        # the trace records the floating-point entries (no BN num_batches_tracked counters)
        assert set(recorded) <= set(ours)
        assert all(k.endswith(".num_batches_tracked") for k in set(ours) - set(recorded))
        for k, (ref_sum, ref_abs) in recorded.items():
            # A sum can cancel to near zero (a BN bias sums to 2e-4 with an absolute sum of 0.036),
            # so both numbers are compared relative to the tensor's absolute sum.
            scale = max(ref_abs, 1e-12)
            got_sum, got_abs = ours[k]
            assert abs(got_sum - ref_sum) <= 1e-4 * scale, f"{which} {k} sum {got_sum} vs {ref_sum}"
            assert abs(got_abs - ref_abs) <= 1e-4 * scale, f"{which} {k} abs sum {got_abs} vs {ref_abs}"


def test_later_losses(trace, replay):
    for ni, rec in enumerate(trace["steps"][1:], start=1):
        rtol = 1e-5 if ni < TIGHT_UNTIL else LATER_LOSS_RTOL
        assert replay.loss[ni] == pytest.approx(rec["loss"], rel=rtol), f"loss at iteration {ni}"
