"""Optional compiled CPU kernels: C sources in the repository, built on first use, loaded with ctypes.

Kernels:

- ``focal_negative`` (``utils/loss/focal_negative.c``): the fused loss + gradient of
  :func:`utils.loss.functional.focal_negative_sum` (the dense (anchors x classes) term of ``dw`` and
  ``freeanchor``), 2-3x faster than the eager chunked version on the CPU. Built with
  ``-O3 -march=native -ffast-math`` (vectorised ``expf`` / ``logf`` from glibc's libmvec); the object
  is linked without ``-ffast-math`` so loading it does not switch the process to flush-denormals-to-zero.
- ``dw_pairs`` (``utils/loss/dw_pairs.c``): ``dw``'s (candidate, object) terms — decode, GIoU / IoU,
  centre prior, both weights, the two positive losses and their gradient (written out) — in two
  vectorised loops over the candidates instead of the PyTorch ops of ``ComputeLossDW.pair_terms`` /
  ``weights`` (``-O3 -ffast-math`` as above).
- ``prior_match`` (``utils/loss/prior_match.c``): ``freeanchor``'s no-grad matching, its bags (top-k
  priors by IoU) and its (object, prior) pairs above the IoU threshold, walking only the cells that
  can overlap an object instead of indexing every pair with PyTorch ops. Plain ``-O2``: IEEE maths.

Each is compiled on first use into ``$YOLO_NATIVE_CACHE`` (default ``~/.cache/yolo-assign``), one file
per source hash, flags, compiler and CPU, so a changed source or another machine builds afresh; a
build takes well under a second. No compiler, a failed build or ``YOLO_NATIVE=0`` in the environment:
the callers keep their PyTorch code (same values, tested), with one log line saying why.

Threads: the kernels work on row ranges; :func:`split_rows` runs one range per torch thread
(``torch.get_num_threads()``) from a thread pool, ctypes releases the GIL during each call.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

LOGGER = logging.getLogger(__name__)
_LOSS_DIR = Path(__file__).resolve().parent / "loss"
SOURCES = {"focal_negative": _LOSS_DIR / "focal_negative.c", "prior_match": _LOSS_DIR / "prior_match.c",
           "dw_pairs": _LOSS_DIR / "dw_pairs.c"}
COMPILE_FLAGS = {
    "focal_negative": ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-fopenmp-simd",
                       "-fPIC", "-std=c99"),
    "prior_match": ("-O2", "-march=native", "-fPIC", "-std=c99"),
    "dw_pairs": ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-fopenmp-simd", "-fPIC",
                 "-std=c99"),
}

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def enabled() -> bool:
    """False when ``YOLO_NATIVE`` is set to 0 / false / no / off."""
    return os.environ.get("YOLO_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    return Path(os.environ.get("YOLO_NATIVE_CACHE") or Path.home() / ".cache" / "yolo-assign")


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next((ln for ln in text.splitlines() if ln.startswith("flags")), platform.processor())
    except OSError:
        return platform.processor()


def build(name: str) -> Path:
    """Compile ``SOURCES[name]`` into the cache (if not there yet) and return the shared library's path.

    Raises:
        RuntimeError: no C compiler, or the build failed (the compiler's message included).
    """
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    src = SOURCES[name].read_bytes()
    key = hashlib.sha256(src + " ".join(COMPILE_FLAGS[name]).encode() + cc.encode() + _cpu_id().encode()
                         + platform.machine().encode()).hexdigest()[:16]
    out = cache_dir() / f"{name}-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        obj, lib = Path(tmp) / f"{name}.o", Path(tmp) / f"{name}.so"
        for cmd in ([cc, *COMPILE_FLAGS[name], "-c", str(SOURCES[name]), "-o", str(obj)],
                    [cc, "-shared", str(obj), "-o", str(lib), "-lmvec", "-lm"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{(r.stderr or r.stdout).strip()}")
        os.replace(lib, out)  # atomic: a concurrent process sees the whole file or none
    return out


def library(name: str) -> ctypes.CDLL | None:
    """The loaded kernel library, or None (disabled, or it could not be built; logged once)."""
    with _lock:
        if name not in _libs:
            lib = None
            if enabled():
                try:
                    lib = ctypes.CDLL(str(build(name)))
                    _declare(name, lib)
                except (RuntimeError, OSError) as e:
                    LOGGER.warning("native kernel '%s' unavailable, using the PyTorch code: %s", name, e)
            _libs[name] = lib
        return _libs[name]


def _declare(name: str, lib: ctypes.CDLL) -> None:
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    if name == "focal_negative":
        f = lib.focal_negative_rows
        f.restype = ctypes.c_double
        f.argtypes = [ptr, ptr, i64, i64, i64, f32, f32, ctypes.POINTER(i64)]
    elif name == "prior_match":
        lib.fa_bags.restype = None
        lib.fa_bags.argtypes = [i64, i64, ptr, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr]
        lib.fa_matched_pairs.restype = i64
        lib.fa_matched_pairs.argtypes = [i64, i64, ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, i64, f32,
                                         i64, ptr, ptr, ptr]
    elif name == "dw_pairs":
        lib.dw_pairs.restype = ctypes.c_int
        lib.dw_pairs.argtypes = [i64, ptr, ptr, ptr, ptr, i64, ctypes.c_double, ctypes.c_double, ptr, ptr, ptr, ptr,
                                 ptr, ptr, ptr, ptr, ptr]


def reset() -> None:
    """Forget loaded libraries (tests use it after changing ``YOLO_NATIVE``)."""
    with _lock:
        _libs.clear()


def split_rows(fn, n: int, min_rows: int = 4096) -> list:
    """``[fn(r0, r1) for each row range]`` covering ``range(n)``, run in parallel, one per torch thread."""
    global _pool, _pool_size
    parts = max(1, min(torch.get_num_threads(), n // min_rows))
    bounds = [n * i // parts for i in range(parts + 1)]
    if parts == 1:
        return [fn(0, n)]
    with _lock:
        if _pool_size < parts:
            _pool, _pool_size = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="yolo-native"), parts
    return [f.result() for f in [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(parts)]]


def focal_negative(x: torch.Tensor, gamma: float, floor_q: float,
                   need_grad: bool) -> tuple[float, torch.Tensor | None] | None:
    """The fused kernel on a contiguous float32 CPU ``x`` (n, 5 + nc): ``(sum, grad or None)``.

    None when the kernel is unavailable, or when the obj / class logits hold inf or NaN (the
    caller's PyTorch code then propagates them as before)."""
    lib = library("focal_negative")
    if lib is None or x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
        return None
    n, no = x.shape
    grad = torch.empty_like(x) if need_grad else None
    xp, gp = x.data_ptr(), (grad.data_ptr() if need_grad else None)

    def rows(r0: int, r1: int) -> tuple[float, int]:
        bad = ctypes.c_int64(0)
        return lib.focal_negative_rows(xp, gp, r0, r1, no, gamma, floor_q, ctypes.byref(bad)), bad.value

    parts = split_rows(rows, n)
    if any(bad for _, bad in parts):
        return None
    return sum(total for total, _ in parts), grad


class LevelArrays:
    """Head levels as the C kernels take them: parallel int64 / float32 arrays (kept alive here).

    ``levels``: objects with ``ny``, ``nx``, ``stride`` (px per cell), ``start`` (first prior index)
    and ``anchor_wh`` (Tensor[na, 2], px), e.g. ``utils.loss.freeanchor._Level``.
    """

    def __init__(self, levels):
        self.n = len(levels)
        self.na = int(levels[0].anchor_wh.shape[0]) if levels else 0
        self.ny = torch.tensor([lv.ny for lv in levels], dtype=torch.int64)
        self.nx = torch.tensor([lv.nx for lv in levels], dtype=torch.int64)
        self.stride = torch.tensor([lv.stride for lv in levels], dtype=torch.float32)
        self.start = torch.tensor([lv.start for lv in levels], dtype=torch.int64)
        self.anchor_wh = torch.stack([lv.anchor_wh.detach().float().cpu() for lv in levels]).contiguous()

    def args(self) -> tuple:
        return (self.n, self.na, self.ny.data_ptr(), self.nx.data_ptr(), self.stride.data_ptr(),
                self.start.data_ptr(), self.anchor_wh.data_ptr())


def _cpu_f32(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()


def fa_bags(boxes_xywh_px: torch.Tensor, levels, k: int) -> torch.Tensor | None:
    """``freeanchor`` bags: (n, k) prior indices of highest IoU per object (ties: lower index first),
    highest first; None when the kernel is unavailable or the inputs are not CPU float32."""
    lib = library("prior_match")
    boxes = boxes_xywh_px.contiguous()
    if lib is None or not _cpu_f32(boxes) or not levels:
        return None
    lv = LevelArrays(levels)
    member = torch.empty((boxes.shape[0], k), dtype=torch.int64)
    split_rows(lambda o0, o1: lib.fa_bags(o0, o1, boxes.data_ptr(), *lv.args(), k, member.data_ptr()),
               boxes.shape[0], min_rows=16)
    return member


def fa_matched_pairs(boxes_xywh_px: torch.Tensor, image: torch.Tensor, levels, preds: list[torch.Tensor],
                     thr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(obj, prior, iou) of every (object, prior) whose decoded prediction has IoU > ``thr`` with the
    object, object by object; None when unavailable. ``preds``: each level's (bs, na, ny, nx, no) output."""
    lib = library("prior_match")
    boxes = boxes_xywh_px.contiguous()
    xs = [p.detach().contiguous() for p in preds]
    if lib is None or not _cpu_f32(boxes) or not levels or not all(_cpu_f32(x) for x in xs):
        return None
    lv = LevelArrays(levels)
    image = image.to(torch.int64).contiguous()
    ptrs = torch.tensor([x.data_ptr() for x in xs], dtype=torch.int64)
    no = xs[0].shape[-1]

    def part(o0: int, o1: int):
        cap = 4096 + 256 * (o1 - o0)
        while True:
            obj, prior = torch.empty(cap, dtype=torch.int64), torch.empty(cap, dtype=torch.int64)
            iou = torch.empty(cap, dtype=torch.float32)
            n = lib.fa_matched_pairs(o0, o1, boxes.data_ptr(), image.data_ptr(), *lv.args(), ptrs.data_ptr(), no,
                                     thr, cap, obj.data_ptr(), prior.data_ptr(), iou.data_ptr())
            if n <= cap:
                return obj[:n], prior[:n], iou[:n]
            cap = n

    parts = split_rows(part, boxes.shape[0], min_rows=16)
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))


def dw_pairs(rows: torch.Tensor, box: torch.Tensor, anchor: torch.Tensor, target: torch.Tensor, n_obj: int,
             sigma: float, loc_scale: float) -> dict[str, torch.Tensor] | None:
    """``dw``'s pair terms of k candidates (see ``utils/loss/dw_pairs.c``), no autograd: a dict of
    ``w_pos``, ``w_neg_iou``, ``iou`` (k,), ``grad`` (k, 6) and ``sums`` (2,) float64 = (cls_pos, loc);
    None when the kernel is unavailable, the inputs are not CPU float32 or the logits hold inf / NaN."""
    lib = library("dw_pairs")
    rows, box, anchor = (t.detach().contiguous() for t in (rows, box, anchor))
    if lib is None or not all(_cpu_f32(t) for t in (rows, box, anchor)):
        return None
    k = rows.shape[0]
    target = target.to(torch.int64).contiguous()
    work = torch.empty((3, max(n_obj, 1)), dtype=torch.float64)
    pair_work = torch.empty((31, k), dtype=torch.float32)  # WORK in dw_pairs.c
    out = {"w_pos": torch.empty(k), "w_neg_iou": torch.empty(k), "iou": torch.empty(k),
           "grad": torch.empty((k, 6)), "sums": torch.zeros(2, dtype=torch.float64)}
    ok = lib.dw_pairs(k, rows.data_ptr(), box.data_ptr(), anchor.data_ptr(), target.data_ptr(), n_obj, sigma, loc_scale,
                 work[0].data_ptr(), work[1].data_ptr(), work[2].data_ptr(), pair_work.data_ptr(), out["w_pos"].data_ptr(),
                 out["w_neg_iou"].data_ptr(), out["iou"].data_ptr(), out["grad"].data_ptr(), out["sums"].data_ptr())
    return out if ok else None
