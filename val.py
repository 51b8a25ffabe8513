"""Validate a checkpoint (ours or an official YOLOv5 .pt) on a dataset split.

    python val.py --weights runs/train/exp/weights/best.pt --data data/bccd.yaml --img 320
    python val.py --weights runs/train/exp/weights/best.pt --verbose   # size and data from the checkpoint

Without --img the image size recorded in the checkpoint is used (ours, or an official file's opt.imgsz);
without --data the dataset YAML the checkpoint was trained on, if it exists here.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.io.cli import (HelpFormatter, add_max_pixels_flag, add_precision_flag, image_size,  # noqa: E402
                          non_negative_int, positive_int)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", type=str, default=None,
                   help="dataset YAML (default: the one the checkpoint was trained on if it exists here, "
                        "else data/shapes.yaml)")
    p.add_argument("--weights", type=str, required=True, help="checkpoint path (ours or official YOLOv5)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=image_size, default=None,
                   help="inference size in pixels (default: the checkpoint's training size, else 640)")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=positive_int, default=300, help="maximum detections per image")
    p.add_argument("--task", default="val", choices=("train", "val", "test", "speed"), help="split to use, or speed")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu (default: first GPU if any, else CPU)")
    p.add_argument("--workers", type=non_negative_int, default=8, help="max dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    p.add_argument("--verbose", action="store_true", help="report mAP by class (one row per class)")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-json", action="store_true", help="save COCO-format detections and ground truth; "
                   "evaluate with pycocotools when installed")
    p.add_argument("--loss", action="store_true", help="also report the val loss of the checkpoint's strategy")
    p.add_argument("--project", default=str(ROOT / "runs/val"), help="save to project/name (default: runs/val)")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="FP16 inference (CUDA only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_precision_flag(p, inference=True)
    add_max_pixels_flag(p)
    return p.parse_args(argv)


def run(opt: argparse.Namespace) -> dict:
    from utils.eval import validator
    from utils.io.checkpoint import load_checkpoint
    from utils.data.config import dataset_names
    from utils.dataloaders import check_dataset, create_dataloader
    from utils.data.verify import set_max_pixels
    from utils.io.paths import make_run_dir
    from utils.io.recorded import pick_data, pick_imgsz
    from utils.core.precision import resolve_precision
    from utils.core.torch_utils import select_device

    set_max_pixels(opt.max_pixels)
    device = select_device(opt.device)
    model, meta = load_checkpoint(opt.weights, device)
    log = logging.getLogger("val")
    precision = resolve_precision(opt.precision, device, inference=True)
    log.info("%s", "FP16 model (--half)" if opt.half and device.type == "cuda" else precision.describe())
    data_file, source = pick_data(opt.data, meta, ROOT / "data/shapes.yaml")
    log.info("dataset %s, %s", data_file, source)
    names = ["item"] if opt.single_cls else dataset_names(data_file)  # checked before any generation or conversion
    if not opt.single_cls and len(names) != model.nc:
        hint = "" if opt.data else f" ({source}); give the right one with --data"
        raise ValueError(f"{opt.weights} was trained for {model.nc} classes but {data_file} has {len(names)}{hint}")
    data = check_dataset(data_file)
    gs = max(int(model.stride.max()), 32)
    size, source = pick_imgsz(opt.imgsz, meta)
    imgsz = math.ceil(size / gs) * gs
    log.info("image size %d, %s%s", imgsz, source, f", rounded up from {size} to a multiple of stride {gs}"
             if imgsz != size else "")
    task = "val" if opt.task == "speed" else opt.task
    if data.get(task) is None:
        raise ValueError(f"{data_file} has no '{task}' split")
    pad, rect = (0.0, False) if opt.task == "speed" else (0.5, True)
    loader, _ = create_dataloader(data[task], imgsz, opt.batch_size, gs, opt.single_cls, pad=pad, rect=rect,
                                  workers=opt.workers, prefix=f"{task}: ", nc=len(data["names"]))
    save_dir = make_run_dir(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)[0]
    compute_loss = None
    if opt.loss:
        from utils.hyp import load_hyp
        from utils.loss import loss_class

        # the gains as training scaled them (levels, classes, training image size), so the val loss is
        # on the scale of train.py's val/*_loss columns
        hyp = load_hyp(meta["hyp"] or {})
        strategy = loss_class(hyp.get("loss"))
        train_size = pick_imgsz(None, meta)[0]
        compute_loss = strategy(model, strategy.train_hyp(
            hyp, nl=model.model[-1].nl, nc=model.nc, imgsz=train_size,
            label_smoothing=float(meta["opt"].get("label_smoothing") or 0.0)))
    res = validator.run(model, loader, names, conf_thres=opt.conf_thres, iou_thres=opt.iou_thres,
                        max_det=opt.max_det, single_cls=opt.single_cls, half=opt.half, compute_loss=compute_loss,
                        save_dir=save_dir, plots=opt.task != "speed", verbose=opt.verbose,
                        save_txt_labels=opt.save_txt, save_conf=opt.save_conf, save_json=opt.save_json,
                        progress=not opt.quiet, precision=precision)
    if res["loss"] is not None:
        log.info("val loss: %s", "  ".join(
            f"{n} {v:.4g}" for n, v in zip(compute_loss.names, res["loss"].tolist())))
    log.info("Results saved to %s", save_dir)
    return res


def main(opt: argparse.Namespace) -> int:
    from utils.io.cli import run_cli

    return run_cli(lambda: run(opt), "val")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(parse_opt()))
