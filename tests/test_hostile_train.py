"""Hostile settings inside training (issue 20): diverging weights are never saved, skipped epochs are
logged as nan, the bad-step count and best.pt survive --resume, and a CPU resume is bit-exact."""
import logging
import re
import types
from pathlib import Path

import pytest
import torch

import train as train_cli
from utils.engine import restore, train_setup, trainer
from utils.io.checkpoint import make_checkpoint, nonfinite_tensors
from models.yolo import Model


def opts(data, project, *extra, epochs=3, workers=0):
    return train_cli.parse_opt(["--data", str(data), "--epochs", str(epochs), "--img", "64", "--batch-size", "4",
                                "--workers", str(workers), "--project", str(project), "--quiet", "--noplots", *extra])


def interrupt_after(monkeypatch, last_epoch):
    """Make training raise KeyboardInterrupt right after ``last_epoch`` was saved (as a kill would)."""
    real = trainer.end_epoch

    def end_then_interrupt(run, epoch, mloss):
        stop = real(run, epoch, mloss)
        if epoch == last_epoch:
            raise KeyboardInterrupt
        return stop

    monkeypatch.setattr(trainer, "end_epoch", end_then_interrupt)
    return real


def csv_rows(run_dir):
    return [[c.strip() for c in ln.split(",")] for ln in (run_dir / "results.csv").read_text().splitlines()[1:]]


def test_diverging_run_stops_naming_the_last_finite_checkpoint(tiny_data, tmp_path, caplog):
    hyp = tmp_path / "hyp.huge.yaml"
    hyp.write_text("lr0: 1.0e+30\n")  # finite, so valid; the weights blow up in epoch 1
    with caplog.at_level(logging.INFO):
        code = train_cli.main(opts(tiny_data, tmp_path, "--hyp", str(hyp), epochs=4))
    last = tmp_path / "exp" / "weights" / "last.pt"
    assert code == 1
    assert re.search(r"error: training stopped in epoch 1: \d+ weight tensor\(s\) hold NaN or inf \(first: model/"
                     rf"[\w.]+\); {re.escape(str(last))} \(epoch 0\) is the last finite checkpoint", caplog.text)
    pts = sorted((tmp_path / "exp" / "weights").iterdir())
    assert [p.name for p in pts] == ["best.pt", "last.pt"]
    for p in pts:
        ckpt = torch.load(p, weights_only=True)
        assert ckpt["epoch"] == 0 and nonfinite_tensors(ckpt) == []
    assert [r[0] for r in csv_rows(tmp_path / "exp")] == ["0"]


class NanLoss:
    """A loss that is NaN for every batch (the names of the real one)."""

    def __init__(self, names):
        self.names = names

    def __call__(self, preds, targets, imgs):
        return preds[0].sum() * float("nan"), torch.full((len(self.names),), float("nan"))


def test_skipped_epoch_is_logged_as_nan_and_bad_steps_survive_resume(tiny_data, tmp_path, monkeypatch, caplog):
    real_epoch = trainer.train_epoch

    def nan_epoch_1(run, epoch):
        if epoch != 1:
            return real_epoch(run, epoch)
        good = run.stepper.compute_loss
        run.stepper.compute_loss = NanLoss(good.names)
        try:
            return real_epoch(run, epoch)
        finally:
            run.stepper.compute_loss = good

    monkeypatch.setattr(trainer, "train_epoch", nan_epoch_1)
    interrupt_after(monkeypatch, 1)
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        trainer.train(opts(tiny_data, tmp_path))
    assert "epoch 1: every step was skipped (non-finite losses)" in caplog.text
    rows = csv_rows(tmp_path / "exp")
    assert rows[1][1:4] == ["nan", "nan", "nan"] and all(float(v) > 0 for v in rows[0][1:4])
    last = tmp_path / "exp" / "weights" / "last.pt"
    assert torch.load(last, weights_only=True)["extra"]["bad_steps"] == 2  # both batches of epoch 1
    run = train_setup.setup(opts(tiny_data, tmp_path, "--resume", str(last)))
    run.lock.release()
    assert run.stepper.bad_steps == 2 and run.start_epoch == 2


def test_resume_recovers_a_best_pt_lost_mid_write(tiny_data, tmp_path, monkeypatch, caplog):
    real = interrupt_after(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(opts(tiny_data, tmp_path))
    weights = tmp_path / "exp" / "weights"
    (weights / "best.pt").unlink()  # killed while best.pt was written: only mkstemp's empty temp file
    (weights / ".best.pt.k1ll3d.tmp").write_bytes(b"")
    monkeypatch.setattr(trainer, "end_epoch", real)
    with caplog.at_level(logging.INFO):
        trainer.train(opts(tiny_data, tmp_path, "--resume", str(weights / "last.pt")))
    assert f"re-saved last.pt (epoch 0) as the missing {weights / 'best.pt'}" in caplog.text
    assert f"Validating {weights / 'best.pt'}" in caplog.text
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]


def test_recover_best_when_the_best_epoch_is_gone(tmp_path, caplog):
    """best.pt of an earlier epoch lost: best restarts from last.pt's epoch, with that epoch's fitness."""
    (tmp_path / "weights").mkdir()
    (tmp_path / "results.csv").write_text(
        "epoch,metrics/precision,metrics/recall,metrics/mAP_0.5,metrics/mAP_0.5:0.95\n"
        "0,0.5,0.5,0.40,0.20\n1,0.5,0.5,0.30,0.10\n")
    model = Model("models/yolov5n.yaml", nc=1)
    model.names = ["a"]
    ckpt = make_checkpoint(model, epoch=1, best_fitness=0.22, extra={"best_epoch": 0})
    run = types.SimpleNamespace(save_dir=tmp_path, best_epoch=0, best_fitness=0.22)
    with caplog.at_level(logging.WARNING):
        restore.recover_best(run, ckpt)
    assert f"{tmp_path / 'weights' / 'best.pt'} of epoch 0 is missing; best.pt restarts from epoch 1" in caplog.text
    assert run.best_epoch == 1 and run.best_fitness == pytest.approx(0.1 * 0.30 + 0.9 * 0.10)
    best = torch.load(tmp_path / "weights" / "best.pt", weights_only=True)
    assert best["epoch"] == 1 and best["extra"]["best_epoch"] == 1


@pytest.mark.parametrize("workers, precision", [(0, "fp32"), (2, "fp32"), (0, "bf16")])
def test_cpu_resume_is_bit_exact(workers, precision, tiny_data, tmp_path, monkeypatch):
    """Killed after epoch 2 and resumed = uninterrupted: the same results.csv and weights, to the bit
    (bf16: autocast and channels_last come back from the run's own options)."""
    flags = ("--precision", precision)
    trainer.train(opts(tiny_data, tmp_path / "a", *flags, epochs=4, workers=workers))
    real = interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(opts(tiny_data, tmp_path / "b", *flags, epochs=4, workers=workers))
    monkeypatch.setattr(trainer, "end_epoch", real)
    last = tmp_path / "b" / "exp" / "weights" / "last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    trainer.train(opts(tiny_data, tmp_path / "b", "--resume", str(last), epochs=4, workers=workers))
    a, b = (Path(tmp_path / x / "exp" / "results.csv").read_text() for x in "ab")
    assert a == b and len(a.splitlines()) == 5
    rows = csv_rows(tmp_path / "a" / "exp")
    assert len({r[2] for r in rows}) == 4  # the epochs differ from each other: the comparison has teeth
    wa, wb = (torch.load(tmp_path / x / "exp" / "weights" / "last.pt", weights_only=True) for x in "ab")
    assert wa["ema"] is None and wb["ema"] is None  # stripped at the end: "model" holds the EMA weights in fp16
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])


def test_disk_full_during_training_keeps_the_previous_last_pt(tiny_data, tmp_path, monkeypatch, caplog):
    from utils.io import checkpoint as ckpt_io

    real_save = ckpt_io.torch.save

    def full_from_epoch_1(obj, f):
        if obj.get("epoch") == 1:
            f.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, f)

    monkeypatch.setattr(ckpt_io.torch, "save", full_from_epoch_1)
    with caplog.at_level(logging.INFO):
        code = train_cli.main(opts(tiny_data, tmp_path))
    last = tmp_path / "exp" / "weights" / "last.pt"
    assert code == 1 and f"error: cannot write checkpoint {last} (" in caplog.text
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.pt", "last.pt"]
    assert not (tmp_path / "exp" / ".lock").exists()
