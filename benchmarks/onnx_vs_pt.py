"""How far detect.py's boxes from the .onnx export are from the .pt ones, per precision of the .pt run.

    python benchmarks/onnx_vs_pt.py                      # the official yolov5n BCCD checkpoint, 20 BCCD images
    python benchmarks/onnx_vs_pt.py --weights best.pt --source path/to/images --img 320 --n 50

Exports ``--weights`` to ONNX (dynamic, fp32) in a temporary folder, runs detect.py on the same images with
the .pt in fp32 and in bf16 and with the .onnx (onnxruntime, float32), and matches each .pt box to the .onnx
box of its class nearest in x, y, w, h. Prints, per .pt precision: the boxes, the largest |difference| of
x, y, w, h (normalised to the image) and of the confidence over matched boxes, and the boxes left without a
partner (a box one side found above --conf and the other did not). Prints the command.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import detect  # noqa: E402
from utils.io.export import export  # noqa: E402

SHARED = ROOT.parent / "shared"


def rows(folder: Path, stem: str) -> np.ndarray:
    """detect.py's label rows of one image: (n, 6) class, x, y, w, h normalised, confidence."""
    f = folder / "labels" / f"{stem}.txt"
    return np.loadtxt(f, ndmin=2).reshape(-1, 6) if f.is_file() else np.zeros((0, 6))


def compare(a_dir: Path, b_dir: Path, stems: list[str]) -> tuple[int, float, float, int]:
    """(boxes of a, max |dxywh|, max |dconf| over matched boxes, boxes without a partner on either side)."""
    n, dbox, dconf, unmatched = 0, 0.0, 0.0, 0
    for stem in stems:
        a, b = rows(a_dir, stem), rows(b_dir, stem)
        n += len(a)
        used: set[int] = set()
        for r in a:
            same = [j for j in range(len(b)) if b[j, 0] == r[0] and j not in used]
            if not same:
                unmatched += 1
                continue
            j = min(same, key=lambda k: np.abs(b[k, 1:5] - r[1:5]).max())
            used.add(j)
            dbox = max(dbox, float(np.abs(b[j, 1:5] - r[1:5]).max()))
            dconf = max(dconf, float(abs(b[j, 5] - r[5])))
        unmatched += len(b) - len(used)
    return n, dbox, dconf, unmatched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(SHARED / "checkpoints" / "yolov5n-bccd-official.pt"))
    ap.add_argument("--source", default=str(SHARED / "datasets" / "bccd" / "JPEGImages"))
    ap.add_argument("--img", type=int, default=320)
    ap.add_argument("--n", type=int, default=20, help="first N images of --source (sorted)")
    ap.add_argument("--conf", type=float, default=0.25)
    a = ap.parse_args()
    images = sorted(p for p in Path(a.source).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:a.n]
    with tempfile.TemporaryDirectory() as tmp:
        (onnx_file,) = export(a.weights, ["onnx"], imgsz=[a.img, a.img], out_dir=tmp)
        kw = dict(source=[str(p) for p in images], imgsz=[a.img], conf_thres=a.conf, device="cpu", save_txt=True,
                  save_conf=True, nosave=True, project=Path(tmp) / "runs")
        with contextlib.redirect_stdout(io.StringIO()):
            dirs = {name: detect.run(weights=w, precision=p, **kw) for name, w, p in
                    (("onnx", onnx_file, "fp32"), ("fp32", a.weights, "fp32"), ("bf16", a.weights, "bf16"))}
        stems = [p.stem for p in images]
        print(f"{len(images)} images of {a.source}, {a.img} px, conf {a.conf}: .pt vs .onnx (float32)")
        print(f"{'.pt precision':>14} {'boxes':>6} {'max |d xywh|':>13} {'max |d conf|':>13} {'unpaired':>9}")
        for name in ("fp32", "bf16"):
            n, dbox, dconf, unmatched = compare(dirs[name], dirs["onnx"], stems)
            print(f"{name:>14} {n:>6} {dbox:>13.2e} {dconf:>13.2e} {unmatched:>9}")
    print("command:", " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
