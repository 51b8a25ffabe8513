"""Export a checkpoint (ours or an official YOLOv5 .pt, anchor or dfl head) to ONNX and/or TorchScript.

    python export.py --weights runs/train/exp/weights/best.pt --include onnx torchscript
    python export.py --weights best.pt --include onnx --img 320 --static
    python detect.py --weights runs/train/exp/weights/best.onnx --source path/to/images

Files are written next to the weights (best.pt -> best.onnx, best.torchscript), or into --out-dir (a
read-only weights folder, another disk); a write that fails leaves no partial file. The model maps
``images`` (B, 3, H, W) float 0..1 to ``output0`` (B, N, 5 + nc): x, y, w, h pixels, objectness,
class probabilities, before NMS. Class names, strides, image size and head kind are stored in the
file. The ONNX file takes any batch and image size by default (dynamic axes), so detect.py letterboxes
for it exactly as for the .pt file and both give the same boxes (the .pt in fp32; with the .pt in bf16
they differ: README, Export); ``--static`` fixes the input to the export size, and detect.py then
letterboxes every image to that square (a non-square image is padded more than on the .pt path, so
boxes can differ). ONNX needs the optional packages of requirements-export.txt (onnx, onnxruntime).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.io.cli import HelpFormatter, hw_imgsz, image_size, positive_int  # noqa: E402
from utils.io.export import FORMATS, MIN_OPSET, OPSET  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--weights", type=str, required=True, help="checkpoint path (.pt)")
    p.add_argument("--include", nargs="+", default=["onnx"], choices=FORMATS, metavar="FORMAT",
                   help=f"formats to write: {', '.join(FORMATS)} (default: onnx)")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=image_size, default=None,
                   help="image size h [w] (default: the checkpoint's training size, else 640)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="batch size of the traced input")
    p.add_argument("--device", default="cpu", help="cpu, or a cuda device such as 0")
    axes = p.add_mutually_exclusive_group()
    axes.add_argument("--dynamic", action="store_true",
                      help="ONNX: dynamic batch, height and width axes (the default; YOLOv5's spelling, kept)")
    axes.add_argument("--static", action="store_true",
                      help="ONNX: input fixed to --batch-size x 3 x --img (detect.py letterboxes every image to that square)")
    p.add_argument("--half", action="store_true", help="FP16 model and input (needs a CUDA --device)")
    p.add_argument("--opset", type=positive_int, default=OPSET,
                   help=f"ONNX opset version, from {MIN_OPSET} to the newest the installed onnx and torch support")
    p.add_argument("--out-dir", default=None, help="folder to write into (default: the weights' folder)")
    opt = p.parse_args(argv)
    opt.imgsz = hw_imgsz(p, opt.imgsz)
    return opt


def main(opt: argparse.Namespace) -> int:
    from utils.io.cli import run_cli
    from utils.io.export import export

    def run() -> None:
        files = export(opt.weights, opt.include, opt.imgsz, opt.device, not opt.static, opt.half, opt.batch_size,
                       opt.opset, opt.out_dir)
        logging.getLogger("export").info("Export complete: %s", " ".join(map(str, files)))

    return run_cli(run, "export")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(parse_opt()))
