"""Optional compiled CPU kernels: C sources in the repository, built on first use, loaded with ctypes.

Today one kernel: ``utils/loss/focal_negative.c``, the fused loss + gradient of
:func:`utils.loss.functional.focal_negative_sum` (the dense (anchors x classes) term of ``dw`` and
``freeanchor``), about 3x faster than the eager chunked version on the CPU (``benchmarks/loss_speed.py``).

Build: ``cc -O3 -march=native -ffast-math`` (vectorised ``expf`` / ``logf`` from glibc's libmvec) into
``$YOLO_NATIVE_CACHE`` (default ``~/.cache/yolo-assign``), one file per source hash, compiler and CPU,
so a changed source or another machine builds afresh; the object is linked without ``-ffast-math`` so
loading it does not switch the process to flush-denormals-to-zero. It takes well under a second. No
compiler, a failed build or ``YOLO_NATIVE=0`` in the environment: the callers keep their eager
PyTorch code (same values, tested), with one log line saying why.

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
SOURCES = {"focal_negative": Path(__file__).resolve().parent / "loss" / "focal_negative.c"}
COMPILE_FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-fopenmp-simd", "-fPIC", "-std=c99")

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}
_pool: ThreadPoolExecutor | None = None


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
    key = hashlib.sha256(src + " ".join(COMPILE_FLAGS).encode() + cc.encode() + _cpu_id().encode()
                         + platform.machine().encode()).hexdigest()[:16]
    out = cache_dir() / f"{name}-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        obj, lib = Path(tmp) / f"{name}.o", Path(tmp) / f"{name}.so"
        for cmd in ([cc, *COMPILE_FLAGS, "-c", str(SOURCES[name]), "-o", str(obj)],
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
    if name == "focal_negative":
        f = lib.focal_negative_rows
        f.restype = ctypes.c_double
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                      ctypes.c_float, ctypes.c_float, ctypes.POINTER(ctypes.c_int64)]


def reset() -> None:
    """Forget loaded libraries (tests use it after changing ``YOLO_NATIVE``)."""
    with _lock:
        _libs.clear()


def split_rows(fn, n: int, min_rows: int = 4096) -> list:
    """``[fn(r0, r1) for each row range]`` covering ``range(n)``, run in parallel, one per torch thread."""
    global _pool
    parts = max(1, min(torch.get_num_threads(), n // min_rows))
    bounds = [n * i // parts for i in range(parts + 1)]
    if parts == 1:
        return [fn(0, n)]
    with _lock:
        if _pool is None or _pool._max_workers < parts:
            _pool = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="yolo-native")
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
