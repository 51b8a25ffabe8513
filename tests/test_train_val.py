"""train.py / val.py end to end on tiny data: run folder contents, resume without duplicate rows,
a loss that falls, and val's AP equal to a hand computation on a constructed case."""
import csv
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import train as train_cli
from models.yolo import Model
from utils.engine import trainer
from utils.io.checkpoint import load_checkpoint
from utils.eval import validator
from utils.dataloaders import create_dataloader
from utils.hyp import load_hyp
from utils.compare.driver import hyp_for
from utils.loss import LOSSES, build_loss


def opts(data, project, *extra):
    return train_cli.parse_opt(["--data", str(data), "--epochs", "2", "--img", "64", "--batch-size", "4",
                                "--workers", "0", "--project", str(project), "--quiet", *extra])


def read_rows(file):
    with open(file, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f)]
    return rows[0], rows[1:]


def test_train_writes_a_yolov5_run_folder(tiny_data, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        res = trainer.train(opts(tiny_data, tmp_path))
    # YOLOv5's summary line at the training size: yolov5n for 5 classes, 4.19 GFLOPs at 640, x (64 / 640)^2
    assert "model summary: 214 layers, 1770682 parameters, 1770682 gradients, 0.0419 GFLOPs at 64 px" in caplog.messages
    run = tmp_path / "exp"
    for f in ("weights/last.pt", "weights/best.pt", "hyp.yaml", "opt.yaml", "results.csv", "results.png", "labels.jpg",
              "summary.json", "confusion_matrix.png", "val_batch0_labels.jpg", "val_batch0_pred.jpg"):
        assert (run / f).is_file(), f
    # the first three batches (2 per epoch here) as 2 x 2 grids of 64 px mosaics
    assert [cv2.imread(str(run / f"train_batch{i}.jpg")).shape for i in range(3)] == [(128, 128, 3)] * 3
    assert not (run / "train_batch3.jpg").exists()
    header, rows = read_rows(run / "results.csv")
    assert header[:5] == ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision"]
    assert "metrics/mAP_0.5:0.95" in header and header[-3:] == ["x/lr0", "x/lr1", "x/lr2"]
    assert [r[0] for r in rows] == ["0", "1"]
    ckpt = torch.load(run / "weights/last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["optimizer"] is None and ckpt["head"] == "anchor"
    # stripped as YOLOv5 does: the EMA weights in fp16 as "model", no EMA copy, no optimizer, no RNG state
    assert ckpt["ema"] is None and "rng" not in ckpt["extra"]
    assert {v.dtype for v in ckpt["model"].values() if v.is_floating_point()} == {torch.float16}
    assert (run / "weights/best.pt").stat().st_size < 5e6  # yolov5n: 3.7 MB (14.4 MB unstripped)
    model, _ = load_checkpoint(run / "weights/best.pt")
    assert next(model.parameters()).dtype == torch.float32
    assert 0.0 <= res["map"] <= res["map50"] <= 1.0
    # val.py --loss on last.pt (the EMA weights epoch 1 validated, same batches: 4 val images, training
    # validates at twice --batch-size) gives epoch 1's val losses: the gains scaled for 64 px as in training,
    # in the run's precision (auto: bf16 on CPUs that have it, else fp32; summary.json says which)
    import val as val_cli
    precision = json.loads((run / "summary.json").read_text())["precision"]
    vres = val_cli.run(val_cli.parse_opt(["--weights", str(run / "weights/last.pt"), "--data", str(tiny_data),
                                          "--batch-size", "8", "--workers", "0", "--loss", "--quiet",
                                          "--precision", precision, "--project", str(tmp_path / "val")]))
    logged = [float(rows[1][header.index(f"val/{n}_loss")]) for n in ("box", "obj", "cls")]
    np.testing.assert_allclose(vres["loss"].numpy(), logged, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("close, epochs, mosaic_by_epoch, message", [
    (2, 5, [True, True, True, False, False], "closing mosaic for the last 2 epochs"),
    (5, 5, [False] * 5, "hyp close_mosaic 5 >= --epochs 5: mosaic is off for the whole run"),
    (9, 3, [False] * 3, "hyp close_mosaic 9 >= --epochs 3: mosaic is off for the whole run"),
    (0, 3, [True] * 3, None)])
def test_close_mosaic(close, epochs, mosaic_by_epoch, message, caplog):
    dataset = SimpleNamespace(mosaic=True)
    run = SimpleNamespace(hyp={"close_mosaic": close}, opt=SimpleNamespace(epochs=epochs),
                          train_loader=SimpleNamespace(dataset=dataset), info=SimpleNamespace(main=True))
    seen = []
    with caplog.at_level("INFO", logger=trainer.LOGGER.name):
        for epoch in range(epochs):
            trainer.close_mosaic(run, epoch)
            seen.append(dataset.mosaic)
    assert seen == mosaic_by_epoch
    assert caplog.messages == ([message] if message else [])
    if close >= epochs:
        assert caplog.records[0].levelname == "WARNING"


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_resume_after_interrupt_gives_one_row_per_epoch(loss, tiny_data, tmp_path, monkeypatch):
    real_end = trainer.end_epoch

    def end_then_interrupt(run, epoch, mloss):
        stop = real_end(run, epoch, mloss)
        if epoch == 0:
            raise KeyboardInterrupt
        return stop

    monkeypatch.setattr(trainer, "end_epoch", end_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(opts(tiny_data, tmp_path, "--hyp", str(hyp_for(loss))))
    last = tmp_path / "exp" / "weights" / "last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    monkeypatch.setattr(trainer, "end_epoch", real_end)
    trainer.train(opts(tiny_data, tmp_path, "--resume", str(last)))
    header, rows = read_rows(tmp_path / "exp" / "results.csv")
    assert [r[0] for r in rows] == ["0", "1"]
    assert header[1:1 + len(LOSSES[loss].names)] == [f"train/{n}_loss" for n in LOSSES[loss].names]
    assert not (tmp_path / "exp2").exists()
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["hyp"]["loss"] == loss and ckpt["head"] == LOSSES[loss].head


def test_loss_falls_on_a_fixed_batch(tiny_data):
    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=5)
    loader, _ = create_dataloader(str(tiny_data.parent / "images" / "train"), 64, 4, 32, workers=0)
    imgs, targets, _, _ = next(iter(loader))
    imgs = imgs.float() / 255
    loss_fn = build_loss(model, load_hyp("hyp.scratch.yaml"))
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    model.train()
    losses = []
    for _ in range(10):
        loss, _ = loss_fn(model(imgs), targets, imgs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(b < a for a, b in zip(losses[3:], losses[4:])), losses


class FixedDetector(nn.Module):
    """Stands in for a model in eval mode: returns given boxes (original 64x64 pixels, xyxy) shifted
    into the letterboxed batch, as ``(pred (bs, N, 5 + nc), raw)``."""

    def __init__(self, boxes_per_image, nc=2):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.boxes, self.nc = boxes_per_image, nc
        self.stride = torch.tensor([8.0, 16.0, 32.0])

    def forward(self, x):
        bs, _, h, w = x.shape
        padw, padh = (w - 64) / 2, (h - 64) / 2
        out = torch.zeros(bs, 4, 5 + self.nc)
        for i in range(bs):
            for j, (x1, y1, x2, y2, conf) in enumerate(self.boxes[i]):
                out[i, j, :4] = torch.tensor([(x1 + x2) / 2 + padw, (y1 + y2) / 2 + padh, x2 - x1, y2 - y1])
                out[i, j, 4], out[i, j, 5] = conf, 1.0
        return out, []


def ap101(recall, precision):
    """COCO/YOLOv5 101-point interpolated AP, written independently of utils.eval.metrics."""
    r = [0.0] + list(recall) + [1.0]
    p = [1.0] + list(precision) + [0.0]
    for k in range(len(p) - 2, -1, -1):
        p[k] = max(p[k], p[k + 1])
    xs = [k / 100 for k in range(101)]
    ys = [float(np.interp(x, r, p)) for x in xs]
    return sum((xs[k + 1] - xs[k]) * (ys[k] + ys[k + 1]) / 2 for k in range(100))


def test_val_ap_equals_hand_computation(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    labels = {"a": [(10, 10, 30, 30)], "b": [(5, 5, 25, 25), (40, 40, 60, 60)]}
    for name, boxes in labels.items():
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.full((64, 64, 3), 100, np.uint8))
        rows = [f"0 {(x1 + x2) / 128} {(y1 + y2) / 128} {(x2 - x1) / 64} {(y2 - y1) / 64}" for x1, y1, x2, y2 in boxes]
        (tmp_path / "labels" / f"{name}.txt").write_text("\n".join(rows) + "\n")
    loader, ds = create_dataloader(str(tmp_path / "images"), 64, 2, 32, rect=True, pad=0.5, workers=0)
    order = [Path(f).stem for f in ds.im_files]
    # image a: exact hit (0.9) and a false positive (0.8); image b: a box of IoU 0.8 with the first
    # label (0.7), the second label missed. IoU 0.8 counts as TP at thresholds 0.50..0.80 (7 of 10).
    dets = {"a": [(10, 10, 30, 30, 0.9), (40, 5, 60, 20, 0.8)], "b": [(5, 5, 25, 21, 0.7)]}
    model = FixedDetector([dets[s] for s in order])
    res = validator.run(model, loader, ["cell", "other"], plots=False, progress=False)
    n_labels = 3
    # detections by confidence: TP, FP, TP(only for IoU <= 0.8)
    ap_low = ap101([1 / n_labels, 1 / n_labels, 2 / n_labels], [1, 1 / 2, 2 / 3])
    ap_high = ap101([1 / n_labels, 1 / n_labels, 1 / n_labels], [1, 1 / 2, 1 / 3])
    assert res["map50"] == pytest.approx(ap_low, abs=1e-9)
    assert res["map"] == pytest.approx((7 * ap_low + 3 * ap_high) / 10, abs=1e-9)
    assert res["seen"] == 2 and res["nt"].tolist() == [3, 0]


def test_sigkill_mid_epoch_then_resume(tiny_data, tmp_path):
    """A run killed with SIGKILL during an epoch resumes from last.pt and ends with one row per epoch."""
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "train.py"), "--data", str(tiny_data), "--epochs", "3", "--img", "64",
           "--batch-size", "2", "--workers", "0", "--project", str(tmp_path), "--quiet", "--noplots"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, csv_file = tmp_path / "exp" / "weights" / "last.pt", tmp_path / "exp" / "results.csv"
    deadline = time.time() + 240
    # results.csv gets its row before last.pt is saved: wait for both, or a loaded machine kills in between
    while not (csv_file.exists() and len(read_rows(csv_file)[1]) >= 1 and last.exists()) and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(last, weights_only=True)["epoch"] in (0, 1)  # never a truncated file
    out = subprocess.run([sys.executable, str(root / "train.py"), "--resume", str(last), "--quiet"], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    _, rows = read_rows(csv_file)
    assert [r[0] for r in rows] == ["0", "1", "2"]
