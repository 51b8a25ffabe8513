"""Recorded behaviour of every loss strategy on fixed cases: loss, items and head-output gradient norms.

    python tests/loss_record.py                 # rewrite tests/data/loss_behaviour.json (every entry)
    python tests/loss_record.py --only ssd,dw   # rewrite only those strategies' entries

``tests/test_loss_record.py`` checks that the current code reproduces the file to relative 1e-5.
The first record was made with ``YOLO_NATIVE=0`` (the PyTorch code, before the optional C
kernels were removed). A change that alters a strategy's behaviour on purpose regenerates that strategy's
entries with the second command and says so in its commit message. So far: ``freeanchor``, when its
bags began to give equal prior IoUs to the lower prior index (``utils.assign.free_anchor.highest_first``);
``ssd``, when its default ratio of negatives per positive went from 3 to 30 (``ssd_ratio3`` keeps SSD's
3 and equals the entries ``ssd`` had before). ``tal``, ``gfl_assigner_tal`` and ``tal_assigner_atss`` were
added with ``--only tal`` (which also measures entries the file lacks), leaving every other entry as it was.

Cases (yolov5n geometry, strides 8/16/32): head outputs are seeded normal logits (objectness and
class logits shifted down, as a freshly initialised head), not a forward pass, so the record does
not depend on convolution arithmetic; targets are literal.

- ``nc80``: 80 classes, 2 images of 128x160 (rectangular), 7 objects from 6 to 120 px;
- ``nc3``: 3 classes, 3 images of 160x160, the middle image without objects;
- ``empty``: 3 classes, 2 images of 128x128, no object in the batch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.yolo import Model  # noqa: E402
from utils.loss import LOSSES, build_loss  # noqa: E402

RECORD = Path(__file__).resolve().parent / "data" / "loss_behaviour.json"

CASES: dict[str, dict] = {
    "nc80": {"nc": 80, "bs": 2, "hw": (128, 160), "seed": 1, "targets": [
        [0, 3, 0.30, 0.40, 0.20, 0.25], [0, 17, 0.70, 0.60, 0.50, 0.55], [0, 79, 0.10, 0.90, 0.05, 0.06],
        [0, 3, 0.33, 0.42, 0.18, 0.30], [1, 0, 0.50, 0.50, 0.75, 0.90], [1, 45, 0.85, 0.15, 0.12, 0.10],
        [1, 0, 0.20, 0.75, 0.04, 0.05]]},
    "nc3": {"nc": 3, "bs": 3, "hw": (160, 160), "seed": 2, "targets": [
        [0, 0, 0.25, 0.25, 0.30, 0.20], [0, 1, 0.60, 0.55, 0.15, 0.15], [0, 2, 0.62, 0.50, 0.10, 0.20],
        [2, 1, 0.50, 0.50, 0.40, 0.40], [2, 0, 0.12, 0.80, 0.08, 0.12], [2, 2, 0.90, 0.92, 0.06, 0.05]]},
    "empty": {"nc": 3, "bs": 2, "hw": (128, 128), "seed": 3, "targets": []},
}

# strategy entries: name in the record -> hyp given to build_loss (defaults otherwise). Every
# registered strategy has its plain entry by itself; a new one only needs recording (--only NAME).
VARIANTS: dict[str, dict] = {name: {"loss": name} for name in LOSSES} | {
    "yolov5_focal_smooth": {"loss": "yolov5", "fl_gamma": 1.5, "label_smoothing": 0.1},
    "ssd_ratio3": {"loss": "ssd", "ssd_neg_pos_ratio": 3.0},
    "ssd_band": {"loss": "ssd", "ssd_neg_iou_thr": 0.3},
    "dw_best_object": {"loss": "dw", "dw_best_object": True},
    "gfl_assigner_tal": {"loss": "gfl", "assigner": "tal"},
    "tal_assigner_atss": {"loss": "tal", "assigner": "atss"},
}

_models: dict[tuple[int, str], Model] = {}


def model_for(nc: int, head: str) -> Model:
    """A yolov5n model (only its head geometry is used), cached per (nc, head)."""
    if (nc, head) not in _models:
        torch.manual_seed(0)
        _models[(nc, head)] = Model(ROOT / "models" / "yolov5n.yaml", nc=nc, head=head).train()
    return _models[(nc, head)]


def case_inputs(case: dict, model: Model) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """(head outputs (bs, na, ny, nx, no) per level, targets (n, 6), imgs (bs, 3, H, W)) of a case."""
    det = model.model[-1]
    g = torch.Generator().manual_seed(case["seed"])
    h, w = case["hw"]
    preds = []
    for s in det.stride.tolist():
        x = torch.randn(case["bs"], det.na, h // int(s), w // int(s), det.no, generator=g) * 1.5
        if model.head_kind == "anchor":
            x[..., 4] -= 3.0  # objectness starts low, as the YOLOv5 bias init
            x[..., 5:] -= 2.0
        else:
            x[..., det.n_dist:] -= 3.0  # class-quality prior 0.01-like
        preds.append(x)
    targets = torch.tensor(case["targets"], dtype=torch.float32).view(-1, 6)
    return preds, targets, torch.zeros(case["bs"], 3, h, w)


def measure(case: dict, hyp: dict) -> dict:
    """Loss, items and the gradient norm of each level's head output for one strategy on one case."""
    loss_fn = build_loss(model_for(case["nc"], LOSSES[hyp["loss"]].head), hyp)
    preds, targets, imgs = case_inputs(case, model_for(case["nc"], LOSSES[hyp["loss"]].head))
    preds = [p.requires_grad_() for p in preds]
    loss, items = loss_fn(preds, targets, imgs)
    loss.backward()
    return {"loss": float(loss.detach()), "items": [float(v) for v in items],
            "grad_norm": [float(p.grad.norm()) for p in preds]}


def record(only: list[str] | None = None) -> dict:
    """Every (case, variant) entry; with ``only`` (strategy names), only those strategies' variants
    are measured and the others are read from the existing file."""
    old = json.loads(RECORD.read_text()) if RECORD.is_file() and only else {}
    out = {}
    for cname, case in CASES.items():
        out[cname] = {}
        kept = [v for v in old.get(cname, {}) if v in VARIANTS]  # the file's order first: diffs only add
        for vname in kept + [v for v in VARIANTS if v not in kept]:
            hyp = VARIANTS[vname]
            if only and hyp["loss"] not in only and vname in old.get(cname, {}):
                out[cname][vname] = old[cname][vname]
            else:
                out[cname][vname] = measure(case, hyp)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated strategies to re-record (default: all)")
    a = ap.parse_args(argv)
    only = [n for n in a.only.split(",") if n]
    unknown = [n for n in only if n not in LOSSES]
    if unknown:
        ap.error(f"unknown loss {unknown[0]!r}; choose from {', '.join(LOSSES)}")
    torch.set_num_threads(1)
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(record(only or None), indent=1) + "\n")
    print(f"wrote {RECORD}")


if __name__ == "__main__":
    main()
