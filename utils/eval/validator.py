"""Validation as YOLOv5's val.py does it: letterboxed rectangular batches, NMS, matching at IoU
0.50:0.95, 101-point interpolated AP, per-class table, speed, val loss, plots and COCO JSON.

``run()`` is called by val.py (from a checkpoint) and by the trainer (with the EMA model, its
dataloader and its loss strategy).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from utils.boxes import scale_boxes, xywh2xyxy, xyxy2xywh
from utils.eval.metrics import DetMetrics
from utils.eval.nms import non_max_suppression
from utils.core.precision import Precision
from utils.core.torch_utils import synced_time

LOGGER = logging.getLogger(__name__)
HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
ROW = "%22s" + "%11i" * 2 + "%11.3g" * 4


class Timer:
    """Accumulated wall time of a code block, with a CUDA sync so GPU work is counted."""

    def __init__(self, device: torch.device):
        self.total, self.device = 0.0, device

    def __enter__(self):
        self.start = synced_time(self.device)
        return self

    def __exit__(self, *exc):
        self.total += synced_time(self.device) - self.start


def label_rows(labels: torch.Tensor, img_shape, shape0, ratio_pad) -> torch.Tensor:
    """labels (m, 5) cls + xywh pixels of the letterboxed image -> (m, 5) cls + xyxy original pixels."""
    boxes = xywh2xyxy(labels[:, 1:5])
    scale_boxes(img_shape, boxes, shape0, ratio_pad)
    return torch.cat((labels[:, :1], boxes), 1)


def save_txt(pred: torch.Tensor, shape0, file: Path, save_conf: bool) -> None:
    """One line per detection: ``cls x y w h [conf]``, xywh normalised to the original image."""
    gain = torch.tensor(shape0, dtype=torch.float32)[[1, 0, 1, 0]]
    with open(file, "a") as f:
        for *xyxy, conf, cls in pred.tolist():
            xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gain).view(-1).tolist()
            line = (cls, *xywh, conf) if save_conf else (cls, *xywh)
            f.write(("%g " * len(line)).rstrip() % line + "\n")


def coco_records(pred: torch.Tensor, image_id: int) -> list[dict]:
    """COCO 'results' entries of one image: bbox = [x_min, y_min, w, h] pixels, category = class id."""
    boxes = pred[:, :4].clone()
    boxes[:, 2:] -= boxes[:, :2]
    return [{"image_id": image_id, "category_id": int(c), "bbox": [round(x, 3) for x in b], "score": round(s, 5)}
            for b, s, c in zip(boxes.tolist(), pred[:, 4].tolist(), pred[:, 5].tolist())]


def coco_ground_truth(dataset, names: list[str]) -> dict:
    """COCO ground-truth dict for a dataset's labels in original-image pixels (image id = index); images
    that failed to decode (skipped by the loader) are left out."""
    images, annotations = [], []
    for i, (f, (w, h), lab) in enumerate(zip(dataset.im_files, dataset.shapes, dataset.labels)):
        if dataset.skipped(i):
            continue
        images.append({"id": i, "file_name": Path(f).name, "width": int(w), "height": int(h)})
        for c, x, y, bw, bh in np.asarray(lab).tolist():
            box = [(x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                                "bbox": [round(v, 3) for v in box], "area": round(box[2] * box[3], 3)})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in enumerate(names)]}


def coco_eval(gt_file: Path, pred_file: Path) -> tuple[float, float] | None:
    """(mAP50-95, mAP50) by pycocotools or faster-coco-eval, when one is installed."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        try:
            from faster_coco_eval import COCO, COCOeval_faster as COCOeval
        except ImportError:
            LOGGER.info("pycocotools not installed: skipping the COCO evaluation of %s", pred_file)
            return None
    gt = COCO(str(gt_file))
    if not json.loads(Path(pred_file).read_text()):
        return 0.0, 0.0
    ev = COCOeval(gt, gt.loadRes(str(pred_file)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def print_results(res: dict, names: list[str], verbose: bool, seen: int) -> None:
    """YOLOv5's table: the 'all' row, then one row per class with labels when ``verbose``."""
    LOGGER.info(HEADER)
    LOGGER.info(ROW % ("all", seen, int(res["nt"].sum()), res["p"], res["r"], res["map50"], res["map"]))
    if res["nt"].sum() == 0:
        LOGGER.warning("no labels found in the validation set, can not compute metrics without labels")
    if verbose:
        for i, c in enumerate(res["ap_class"]):
            LOGGER.info(ROW % (names[c], seen, res["nt"][c], res["class_p"][i], res["class_r"][i],
                               res["class_ap50"][i], res["class_ap"][i]))


@torch.no_grad()
def run(model: torch.nn.Module, dataloader, names: list[str], *, conf_thres: float = 0.001,
        iou_thres: float = 0.6, max_det: int = 300, single_cls: bool = False, half: bool = False,
        compute_loss=None, save_dir: Path | None = None, plots: bool = True, verbose: bool = False,
        save_txt_labels: bool = False, save_conf: bool = False, save_json: bool = False,
        progress: bool = True, precision: Precision | None = None) -> dict[str, Any]:
    """Validate ``model`` (eval mode, on its device) over ``dataloader``; the forward pass under
    ``precision``'s autocast when given (boxes, scores and the val loss stay float32), in float16
    with ``half`` on CUDA.

    Returns a dict with the metrics of :meth:`utils.eval.metrics.DetMetrics.compute`, ``loss`` (val loss
    items averaged over batches, or None), ``speed`` (ms per image: pre-process, inference, NMS),
    ``maps`` (nc,) per-class mAP50-95 (the overall mAP where a class has no labels), and ``coco``
    ((mAP50-95, mAP50) from pycocotools when ``save_json`` and it is installed).
    """
    device = next(model.parameters()).device
    half = half and device.type == "cuda"
    model.half() if half else model.float()
    if half or precision is None:
        precision = Precision("fp32", device.type, "--half" if half else "default")
    precision.prepare(model)
    model.eval()
    nc = 1 if single_cls else len(names)
    metrics = DetMetrics(nc)
    timers = [Timer(device) for _ in range(3)]
    loss = None
    jdict: list[dict] = []
    if save_txt_labels and save_dir is not None:
        (save_dir / "labels").mkdir(parents=True, exist_ok=True)
    batches = tqdm(dataloader, desc=HEADER, bar_format="{l_bar}{bar:10}{r_bar}", disable=not progress)
    height = width = 0
    # COCO image id = dataset index, looked up by path: a skipped (undecodable) image shifts no other
    image_ids = {f: i for i, f in enumerate(dataloader.dataset.im_files)} if save_json else {}
    for batch_i, (im, targets, paths, shapes) in enumerate(batches):
        if not len(im):  # every image of the batch failed to decode (the dataset warned)
            continue
        with timers[0]:
            im = im.to(device, non_blocking=True)
            im = (im.half() if half else im.float()) / 255
            im = precision.batch(im)
            targets = targets.to(device)
        nb, _, height, width = im.shape
        with timers[1], precision.autocast():
            preds, raw = model(im)
        if compute_loss is not None:
            items = compute_loss([x.float() for x in raw], targets, im)[1]
            loss = items if loss is None else loss + items
        targets[:, 2:] *= torch.tensor((width, height, width, height), device=device)
        with timers[2]:
            dets = non_max_suppression(preds, conf_thres, iou_thres, multi_label=True, agnostic=single_cls,
                                       max_det=max_det)
        batch_preds, batch_labels = [], []
        for si, pred in enumerate(dets):
            labels = targets[targets[:, 0] == si, 1:]
            if single_cls:
                pred[:, 5] = 0
                labels[:, 0] = 0
            predn = pred.clone().float()
            scale_boxes(im[si].shape[1:], predn[:, :4], shapes[si][0], shapes[si][1])
            batch_preds.append(predn)
            batch_labels.append(label_rows(labels, im[si].shape[1:], shapes[si][0], shapes[si][1]))
            if save_txt_labels and save_dir is not None:
                save_txt(predn, shapes[si][0], save_dir / "labels" / f"{Path(paths[si]).stem}.txt", save_conf)
            if save_json:
                jdict += coco_records(predn, image_id=image_ids[paths[si]])
        metrics.update(batch_preds, batch_labels)
        if plots and save_dir is not None and batch_i < 3:
            _plot_val_batch(im, targets, dets, paths, names, save_dir, batch_i)
    res = metrics.compute(plot=plots and save_dir is not None, save_dir=save_dir or ".", names=names)
    print_results(res, names, verbose and nc > 1, res["seen"])
    seen = max(res["seen"], 1)
    res["speed"] = tuple(t.total / seen * 1e3 for t in timers)
    LOGGER.info("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape %s"
                % (*res["speed"], (getattr(dataloader, "batch_size", 1), 3, height, width)))
    res["loss"] = None if loss is None else (loss / max(len(dataloader), 1)).cpu()
    res["maps"] = np.full(nc, res["map"])
    for i, c in enumerate(res["ap_class"]):
        res["maps"][c] = res["class_ap"][i]
    res["coco"] = None
    if save_json and save_dir is not None:
        res["coco"] = _write_coco(jdict, dataloader.dataset, names, save_dir)
    model.float()
    return res


def _write_coco(jdict: list[dict], dataset, names: list[str], save_dir: Path) -> tuple[float, float] | None:
    pred_file, gt_file = save_dir / "predictions.json", save_dir / "ground_truth.json"
    pred_file.write_text(json.dumps(jdict))
    gt_file.write_text(json.dumps(coco_ground_truth(dataset, names)))
    LOGGER.info("COCO-format detections saved to %s, ground truth to %s", pred_file, gt_file)
    result = coco_eval(gt_file, pred_file)
    if result is not None:
        LOGGER.info("pycocotools: mAP50-95 %.4f  mAP50 %.4f", *result)
    return result


def _plot_val_batch(im, targets, dets, paths, names, save_dir: Path, batch_i: int) -> None:
    from utils.io.plots import plot_images

    plot_images(im, targets, paths, save_dir / f"val_batch{batch_i}_labels.jpg", names)
    rows = [torch.cat((torch.full((len(d), 1), i, device=d.device), d[:, 5:6], xyxy2xywh(d[:, :4]), d[:, 4:5]), 1)
            for i, d in enumerate(dets)]
    plot_images(im, torch.cat(rows, 0) if rows else torch.zeros(0, 7), paths,
                save_dir / f"val_batch{batch_i}_pred.jpg", names)
