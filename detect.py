"""Run a trained detector on images, folders, globs, .txt lists and videos (YOLOv5 ``detect.py`` flags).

Usage:
    python detect.py                                     # newest runs/train/*/weights/best.pt on generated samples
    python detect.py --weights runs/train/exp/weights/best.pt --source path/to/images
    python detect.py --weights best.pt --source list.txt --img 320 --save-txt --save-conf --save-crop

Without ``--weights`` the newest ``runs/train/*/weights/best.pt`` is used; without ``--source``, four
generated shapes images (``datasets/samples/``, made on first use). Without ``--img`` the image size recorded in the checkpoint is used (else 640). Box lines and label
text are sized by each image. Writes annotated copies to ``runs/detect/exp*/`` (same file names;
videos as .mp4), YOLO-format ``labels/*.txt`` (``cls x y w h [conf]``, normalised) with ``--save-txt``
for each image with detections (a box that lies wholly in the letterbox padding is dropped, never written
with zero size)
and per-class crops under ``crops/<class>/`` with ``--save-crop``.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from utils.io.annotate import draw_detections, save_one_box
from utils.io.cli import HelpFormatter
from utils.boxes import scale_boxes, xyxy2xywh
from utils.eval.nms import non_max_suppression
from utils.data.verify import DEFAULT_MAX_IMAGE_PIXELS, set_max_pixels
from utils.io.cli import add_max_pixels_flag, add_precision_flag, hw_imgsz, image_size, positive_int
from utils.io.paths import make_run_dir, newest_file, remove_empty_dirs
from utils.io.sources import LoadImages
from utils.core.precision import Precision, resolve_precision
from utils.core.torch_utils import select_device

ROOT = Path(__file__).resolve().parent
TRAIN_RUNS = Path("runs/train")  # train.py's default --project


def check_img_size(imgsz: int | Sequence[int], stride: int = 32, floor: int = 0) -> list[int]:
    """Round each image side up to a multiple of ``stride`` (printing a warning when it changes)."""
    sizes = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    new = [max(math.ceil(x / stride) * stride, floor) for x in sizes]
    if new != sizes:
        print(f"WARNING: --img-size {sizes} must be a multiple of max stride {stride}, updating to {new}")
    return new


def default_weights() -> Path:
    """The newest best.pt under runs/train (train.py's default project), as detect.py's default --weights."""
    best = newest_file(TRAIN_RUNS, "*/weights/best.pt")
    if best is None:
        raise FileNotFoundError(f"no --weights given and no {TRAIN_RUNS}/*/weights/best.pt here: train first "
                                "(python train.py) or pass --weights")
    print(f"weights {best}, the newest run's best.pt")
    return best


def default_source() -> Path:
    """A few generated sample images (made on first use), as detect.py's default --source."""
    from utils.data.shapes_dataset import ensure_sample_images

    folder = ensure_sample_images(ROOT / "datasets" / "samples")
    print(f"source {folder}, generated sample images")
    return folder


def visible_boxes(det: torch.Tensor) -> torch.Tensor:
    """The detections (n, 6) xyxy px/conf/cls, scaled to the original image and rounded, that keep some
    width and height: a box predicted wholly inside the letterbox padding is clipped to a line on the
    image border (``0 0 0.5 0 1`` in YOLO txt) and is no detection of anything in the image."""
    return det[(det[:, 2] > det[:, 0]) & (det[:, 3] > det[:, 1])]


def write_labels(path: Path, det: torch.Tensor, shape: Sequence[int], save_conf: bool) -> None:
    """Append detections (n, 6) xyxy px/conf/cls of an image of ``shape`` (h, w) as YOLO txt lines."""
    gain = torch.tensor(shape)[[1, 0, 1, 0]]  # w, h, w, h
    with open(path, "a") as f:
        for *xyxy, conf, cls in det.tolist():
            xywhn = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gain).view(-1).tolist()
            line = (cls, *xywhn, conf) if save_conf else (cls, *xywhn)
            f.write(("%g " * len(line)).rstrip() % line + "\n")


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun`` in English number: '1 cross', '2 crosses', '3 butterflies', '2 Platelets'.

    Nouns already ending in a single 's' ('skis', 'scissors', 'Platelets') are taken as plural.
    """
    if n == 1 or not noun:
        return f"{n} {noun}"
    low = noun.lower()
    if low.endswith(("ss", "sh", "ch", "x", "z", "us")):
        return f"{n} {noun}es"
    if low.endswith("s"):
        return f"{n} {noun}"
    if low.endswith("y") and low[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        return f"{n} {noun[:-1]}ies"
    return f"{n} {noun}s"


def summarize(det: torch.Tensor, names: Sequence[str]) -> str:
    """'2 circles, 1 cross, ' style count of detections (n, 6) per class, in class order."""
    s = ""
    for c in det[:, 5].unique():
        n = int((det[:, 5] == c).sum())
        s += plural(n, names[int(c)] if int(c) < len(names) else str(int(c))) + ", "
    return s


def save_crops(det: torch.Tensor, im0: np.ndarray, crops_dir: Path, names: Sequence[str], stem: str) -> None:
    """Save each detection (n, 6) xyxy px/conf/cls of the clean BGR image as crops_dir/<class>/<stem>*.jpg."""
    for *xyxy, _, cls in det.tolist():
        c = int(cls)
        folder = names[c] if c < len(names) else str(c)
        save_one_box(xyxy, im0, file=crops_dir / folder / f"{stem}.jpg")


class VideoSaver:
    """Keeps one ``cv2.VideoWriter`` per output path and closes the previous one when the path changes."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.writer: cv2.VideoWriter | None = None

    def write(self, path: Path, frame: np.ndarray, cap: cv2.VideoCapture) -> None:
        target = str(path.with_suffix(".mp4"))
        if target != self.path:
            self.close()
            fps = cap.get(cv2.CAP_PROP_FPS) or 30
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            self.path = target
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.path, self.writer = None, None


def load_model(weights: str | Path, device: torch.device) -> tuple[torch.nn.Module, list[str], dict]:
    """Our checkpoint, an official YOLOv5 .pt or an export.py .onnx -> (model in eval mode on ``device``,
    class names, meta)."""
    from utils.io.checkpoint import load_checkpoint

    if Path(weights).suffix == ".onnx":
        from utils.io.onnx_backend import OnnxModel

        onnx_model = OnnxModel(weights, device)
        return onnx_model, onnx_model.names, onnx_model.meta

    model, meta = load_checkpoint(weights, device="cpu")
    names = meta.get("names") or getattr(model, "names", None) or [str(i) for i in range(int(model.nc))]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    return model.to(device).eval(), list(names), meta


def inference_precision(model: torch.nn.Module, precision: str, device: torch.device, half: bool) -> Precision:
    """The autocast of ``--precision`` for a torch model (printed), prepared in its memory format; fp32
    for an ONNX model (its session runs in the precision it was exported in: said in one line where
    ``--precision bf16`` asked otherwise) and with ``--half``."""
    if not isinstance(model, torch.nn.Module):
        exported = "float16 (export.py --half)" if getattr(model, "input_dtype", None) == np.float16 else "float32"
        if precision == "bf16":
            print(f"WARNING: --precision bf16 does not apply to an .onnx model: onnxruntime runs it in {exported}, "
                  "the precision it was exported in (give the .pt file for bf16)")
        return Precision("fp32", device.type, "ONNX")
    if half:
        return Precision("fp32", device.type, "--half")
    amp = resolve_precision(precision, device, inference=True)
    amp.prepare(model)
    print(amp.describe())
    return amp


def inference_size(imgsz: int | Sequence[int] | None, meta: dict, stride: int) -> list[int]:
    """[h, w] to letterbox to: ``imgsz`` (--img, 1 or 2 values), else the checkpoint's training size, else 640;
    rounded up to a multiple of ``stride``. Prints where the size came from."""
    from utils.io.recorded import pick_imgsz

    if imgsz is None:
        size, source = pick_imgsz(None, meta)
        imgsz = [size]
    else:
        source = "from --img"
    imgsz = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    print(f"image size {' x '.join(map(str, imgsz))}, {source}")
    imgsz = check_img_size(imgsz, stride)
    return imgsz * 2 if len(imgsz) == 1 else imgsz


def show(window: str, im: np.ndarray) -> bool:
    """Display a frame; False when this OpenCV build has no GUI (headless)."""
    try:
        cv2.imshow(window, im)
        cv2.waitKey(1)
        return True
    except cv2.error:
        print("WARNING: --view-img needs an OpenCV build with GUI support; not showing images")
        return False


@torch.no_grad()
def run(weights: str | Path | None = None, source: str | Path | Sequence[str] | None = None,
        imgsz: int | Sequence[int] | None = None, conf_thres: float = 0.25, iou_thres: float = 0.45,
        max_det: int = 1000, device: str = "", view_img: bool = False, save_txt: bool = False,
        save_conf: bool = False, save_crop: bool = False, nosave: bool = False, classes: Sequence[int] | None = None,
        agnostic_nms: bool = False, project: str | Path = "runs/detect", name: str = "exp", exist_ok: bool = False,
        line_thickness: int | None = None, hide_labels: bool = False, hide_conf: bool = False, half: bool = False,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, precision: str = "auto") -> Path:
    """Detect objects in every image / frame of ``source``; returns the run folder.

    ``weights`` None: the newest runs/train/*/weights/best.pt; ``source`` None: generated sample images.
    ``imgsz`` None: the checkpoint's training size (else 640). ``line_thickness`` None: from each image's size.
    Images over ``max_pixels`` (read from the header, before decoding) are skipped; a source of
    which nothing could be read is a FileNotFoundError giving the reasons.
    """
    save_img = not nosave
    set_max_pixels(max_pixels)
    device = select_device(device)
    model, names, meta = load_model(weights or default_weights(), device)
    half &= device.type != "cpu"
    if half:
        model.half()
    amp = inference_precision(model, precision, device, half)
    stride = int(model.stride.max())
    fixed = getattr(model, "fixed_imgsz", None)  # a static ONNX export takes its exported size only
    if fixed:
        print(f"image size {' x '.join(map(str, fixed))}, fixed by the ONNX export")
    imgsz = fixed or inference_size(imgsz, meta, stride)
    dataset = LoadImages(source or default_source(), img_size=imgsz, stride=stride, auto=not fixed)
    save_dir, created = make_run_dir(Path(project) / name, exist_ok=exist_ok)  # after the checks: no empty runs
    if save_txt:
        (save_dir / "labels").mkdir(exist_ok=True)

    seen, times, video, show_ok = 0, [0.0, 0.0, 0.0], VideoSaver(), view_img
    for path, im, im0, cap, s in dataset:
        t0 = time.perf_counter()
        x = torch.from_numpy(im).to(device)
        x = amp.batch((x.half() if half else x.float())[None] / 255)  # (1, 3, h, w) 0..1
        t1 = time.perf_counter()
        with amp.autocast():
            pred = model(x)
        t2 = time.perf_counter()
        det = non_max_suppression(pred, conf_thres, iou_thres, classes, agnostic_nms, max_det=max_det)[0]
        t3 = time.perf_counter()
        times = [a + b for a, b in zip(times, (t1 - t0, t2 - t1, t3 - t2))]
        seen += 1

        p = Path(path)
        det = det.float().cpu()
        det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], im0.shape).round()
        det = visible_boxes(det)
        s += "%gx%g " % tuple(x.shape[2:]) + summarize(det, names)
        stem = p.stem if cap is None else f"{p.stem}_{dataset.frame}"
        if save_txt and len(det):
            write_labels(save_dir / "labels" / f"{stem}.txt", det, im0.shape[:2], save_conf)
        if save_crop:
            save_crops(det, im0, save_dir / "crops", names, p.stem)
        annotated = draw_detections(im0, det, names, line_thickness, hide_labels, hide_conf)
        if show_ok:
            show_ok = show(str(p), annotated)
        if save_img:
            if cap is None:
                cv2.imwrite(str(save_dir / p.name), annotated)
            else:
                video.write(save_dir / p.name, annotated, cap)
        print(f"{s}{'' if len(det) else '(no detections), '}{(t2 - t1) * 1e3:.1f}ms")
    video.close()
    if not seen:
        remove_empty_dirs(save_dir / "labels", *([save_dir] if created else []))
        reasons = "; ".join(f"{p}: {why}" for p, why in dataset.skipped[:3])
        raise FileNotFoundError(f"--source {source}: nothing could be read ({reasons})")

    per_image = tuple(t / max(seen, 1) * 1e3 for t in times)
    print(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {(1, 3, *imgsz)}" % per_image)
    if save_txt or save_img:
        n = len(list(save_dir.glob("labels/*.txt")))
        extra = f"\n{n} label{'s' * (n != 1)} saved to {save_dir / 'labels'}" if save_txt else ""
        print(f"Results saved to {save_dir}{extra}")
    return save_dir


def parse_opt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--weights", type=str, default=None,
                        help="checkpoint path (.pt, or .onnx from export.py) (default: the newest "
                             "runs/train/*/weights/best.pt)")
    parser.add_argument("--source", type=str, default=None,
                        help="file/dir/glob/.txt list/video (default: generated sample images in datasets/samples)")
    parser.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=image_size, default=None,
                        help="inference size h,w (default: the checkpoint's training size, else 640)")
    parser.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=positive_int, default=1000, help="maximum detections per image")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1 or cpu (default: first GPU if any, else CPU)")
    parser.add_argument("--view-img", action="store_true", help="show results")
    parser.add_argument("--save-txt", action="store_true", help="save labels/<image>.txt for each image with detections")
    parser.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    parser.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    parser.add_argument("--nosave", action="store_true", help="do not save images/videos")
    parser.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    parser.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--project", default="runs/detect", help="save results to project/name")
    parser.add_argument("--name", default="exp", help="save results to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    parser.add_argument("--line-thickness", default=None, type=int,
                        help="bounding box thickness in pixels (default: 0.3%% of the image's mean side, >= 1)")
    parser.add_argument("--hide-labels", action="store_true", help="hide labels")
    parser.add_argument("--hide-conf", action="store_true", help="hide confidences")
    parser.add_argument("--half", action="store_true", help="use FP16 half-precision inference (GPU only)")
    add_precision_flag(parser, inference=True)
    add_max_pixels_flag(parser)
    opt = parser.parse_args(argv)
    opt.imgsz = hw_imgsz(parser, opt.imgsz)
    return opt


def main(opt: argparse.Namespace) -> Path:
    return run(**vars(opt))


def cli(argv: Sequence[str] | None = None) -> int:
    """``main`` with the errors a user can act on printed as one line (exit status 1)."""
    from utils.io.cli import run_cli

    opt = parse_opt(argv)
    return run_cli(lambda: main(opt), "detect")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(cli())
