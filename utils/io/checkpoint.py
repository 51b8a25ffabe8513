"""Checkpoints: our plain-data format, and read-only import of official YOLOv5 ``.pt`` files.

Our format is a dict of plain data (tensors, dicts, lists, numbers, strings) that loads with
``torch.load(path, weights_only=True)``. Official YOLOv5 files are pickled module trees; they
are read by ``utils/io/unpickle.py``, which maps every class the file names to an inert
stand-in (nothing from the file is ever called) and refuses any other global.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import secrets
import shutil
import zipfile
from pathlib import Path, PurePath
from typing import Any

import torch
from torch import nn

from models.yolo import Model
from utils.io.unpickle import CheckpointError, check_storage_sizes, from_official, restricted_load

LOGGER = logging.getLogger(__name__)
MIN_FREE_BYTES = 64 * 2 ** 20  # less free space than this after a failed write: the disk was full
FORMAT_TAG = "yolo-lab-checkpoint"
FORMAT_VERSION = 1


class NonFiniteCheckpoint(CheckpointError):
    """A checkpoint about to be written holds NaN or inf values; nothing was written."""


# --------------------------------------------------------------------------- writing

def _plain(x: Any, where: str) -> Any:
    """``x`` as data that ``torch.load(weights_only=True)`` accepts (Paths become str)."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, (PurePath, torch.device, torch.dtype)):
        return str(x)
    if isinstance(x, argparse.Namespace):
        x = vars(x)
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):  # the trainer's frozen TrainConfig
        x = dataclasses.asdict(x)
    if isinstance(x, dict):
        return {k if isinstance(k, (int, str)) else str(k): _plain(v, f"{where}.{k}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v, f"{where}[{i}]") for i, v in enumerate(x))
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return x.item()
    LOGGER.warning("checkpoint: storing %s (%s) as a string", where, type(x).__name__)
    return str(x)


def _float_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict on CPU with floating tensors as float32 (integer buffers kept), contiguous (a
    channels_last model saves the plain layout every loader expects)."""
    return {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in module.state_dict().items()}


def make_checkpoint(model: nn.Module, *, ema: Any = None, optimizer: torch.optim.Optimizer | None = None,
                    epoch: int = -1, best_fitness: float | None = None, hyp: dict | None = None,
                    opt: Any = None, extra: dict | None = None) -> dict[str, Any]:
    """Plain-data checkpoint dict for ``model`` (a ``Model``).

    ``ema`` is a ``ModelEMA`` (with ``.ema`` and ``.updates``) or a bare module; ``opt`` the
    training arguments (Namespace or dict).
    """
    model = getattr(model, "module", model)  # DataParallel / DDP wrapper
    ema_module = getattr(ema, "ema", ema)
    return {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "model": _float_state_dict(model),
        "yaml": _plain(model.yaml, "yaml"),
        "head": getattr(model, "head_kind", "anchor"),
        "names": [str(n) for n in model.names],
        "epoch": int(epoch),
        "best_fitness": None if best_fitness is None else float(best_fitness),
        "hyp": _plain(hyp or {}, "hyp"),
        "optimizer": None if optimizer is None else _plain(optimizer.state_dict(), "optimizer"),
        "ema": None if ema_module is None else _float_state_dict(ema_module),
        "updates": int(getattr(ema, "updates", 0)) if ema is not None else None,
        "opt": _plain(opt or {}, "opt"),
        "extra": _plain(extra or {}, "extra"),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def strip_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A finished run's checkpoint as YOLOv5's ``strip_optimizer`` leaves it: the EMA weights (the ones
    val.py and detect.py use) in fp16 as ``model``, no EMA copy, no optimizer, no RNG state.

    A yolov5n file drops from ~14 MB to under 4 MB; it loads as before (``load_checkpoint`` casts the
    weights back to float32) but cannot be resumed, only trained further with ``--weights``.
    """
    weights = ckpt.get("ema") or ckpt["model"]
    extra = {k: v for k, v in (ckpt.get("extra") or {}).items() if k != "rng"}
    return {**ckpt, "model": {k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
            "ema": None, "updates": None, "optimizer": None, "extra": extra}


def nonfinite_tensors(x: Any, where: str = "") -> list[str]:
    """Names (``model/model.0.conv.weight``) of the floating tensors in ``x`` holding NaN or inf."""
    if isinstance(x, torch.Tensor):
        return [where] if x.is_floating_point() and not bool(torch.isfinite(x).all()) else []
    if isinstance(x, dict):
        return [n for k, v in x.items() for n in nonfinite_tensors(v, f"{where}/{k}" if where else str(k))]
    if isinstance(x, (list, tuple)):
        return [n for i, v in enumerate(x) for n in nonfinite_tensors(v, f"{where}[{i}]")]
    return []


def _new_temp(path: Path) -> tuple[int, str]:
    """Create ``.{name}.<random>.tmp`` beside ``path`` with mode 0o666, which the kernel reduces by the
    umask as for any new file (mkstemp's would be a private 0o600); returns (fd, its path)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue


def _write_failure(e: BaseException, path: Path) -> str:
    """Why a checkpoint write failed, in words: the OS's reason, or for torch's own writer (whose message
    is "[enforce fail at inline_container.cc:...] unexpected pos ...") the free space left on the disk."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < MIN_FREE_BYTES:
        return f"the disk is full: {free / 2 ** 20:.1f} MiB free"
    return "write failed" if "enforce fail" in str(e) else " ".join(str(e).split())[:200]


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write ``ckpt`` atomically: temp file in the same folder, fsync, then ``os.replace``.

    The file gets the mode any new file would (0o666 less the umask), not mkstemp's private 0o600.
    A checkpoint holding a non-finite tensor is never written (NonFiniteCheckpoint), and a failed
    write (disk full, read-only folder) is a CheckpointError; both leave an existing file unchanged.
    """
    path = Path(path)
    bad = nonfinite_tensors(ckpt)
    if bad:
        raise NonFiniteCheckpoint(f"not writing {path}: {len(bad)} tensor(s) hold NaN or inf "
                                  f"(first: {', '.join(bad[:3])}); the previous file is kept")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _new_temp(path)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path} ({_write_failure(e, path)}); "
                              "the previous file, if any, is unchanged") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


# --------------------------------------------------------------------------- loading

def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() in (".onnx", ".torchscript"):
        raise CheckpointError(f"'{path}' is an exported model, not a checkpoint: give a .pt here "
                              "(.onnx files run with detect.py)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' not found")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw dict of one of our checkpoints (e.g. for --resume), via weights_only loading."""
    path = _check_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            check_storage_sizes(archive, path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"'{path}' is truncated or not a checkpoint ({type(e).__name__}: {e})") from None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for corrupt or unsafe files
        restricted_load(path)  # raises the clearer error: truncated, or which global is refused
        ckpt = None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_TAG:
        raise CheckpointError(f"'{path}' is not a checkpoint written by this project (an official "
                              "YOLOv5 file can be loaded with load_checkpoint, not resumed)")
    return ckpt


def _build_model(ckpt: dict[str, Any], path: Path) -> Model:
    weights = ckpt["ema"] if ckpt.get("ema") else ckpt["model"]
    if not isinstance(weights, dict) or not isinstance(ckpt.get("yaml"), dict):
        raise CheckpointError(f"'{path}' holds no state_dict and model YAML dicts")
    not_tensors = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"'{path}': state_dict key '{not_tensors[0]}' holds a "
                              f"{type(weights[not_tensors[0]]).__name__}, not a tensor")
    try:
        model = Model(ckpt["yaml"], nc=ckpt["yaml"].get("nc"), head=ckpt.get("head"))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot rebuild the model stored in '{path}': {e}") from e
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"'{path}' does not fit its model: missing keys {missing[:3]}, "
                              f"unexpected keys {unexpected[:3]}")
    for k, v in expected.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise CheckpointError(f"'{path}': state_dict key '{k}' has shape {tuple(weights[k].shape)}, "
                                  f"model expects {tuple(v.shape)}")
    model.load_state_dict({k: w.to(expected[k].dtype) for k, w in weights.items()}, strict=True)
    model.names = list(ckpt.get("names") or model.names)
    if len(model.names) != model.nc:  # class ids beyond the names, or names no output scores
        raise CheckpointError(f"'{path}' names {len(model.names)} classes but its model predicts {model.nc}")
    return model.float().eval()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    head: str | None = None) -> tuple[Model, dict[str, Any]]:
    """Model in eval mode (float32, EMA weights if present) and meta data from a checkpoint.

    Reads our format and official YOLOv5 files alike, without executing anything from the
    file. ``head``, when given, must equal the head kind the checkpoint was trained with.
    meta: names, head, yaml, epoch, hyp, format ('ours' | 'yolov5-official'), best_fitness, opt.
    """
    path = _check_file(path)
    raw = restricted_load(path)
    if isinstance(raw, dict) and raw.get("format") == FORMAT_TAG:
        ckpt, fmt = raw, "ours"
    elif isinstance(raw, dict) and "model" in raw:
        ckpt, fmt = from_official(raw, path), "yolov5-official"
    else:
        raise CheckpointError(f"'{path}' is not a YOLOv5 or yolo-lab checkpoint")
    kind = ckpt.get("head") or "anchor"
    if head is not None and head != kind:
        raise CheckpointError(f"'{path}' holds head '{kind}' but head '{head}' was requested")
    model = _build_model(ckpt, path).to(device)
    meta = {"names": model.names, "head": kind, "yaml": model.yaml, "epoch": ckpt.get("epoch", -1),
            "hyp": ckpt.get("hyp") or {}, "format": fmt, "best_fitness": ckpt.get("best_fitness"),
            "opt": ckpt.get("opt") or {}, "path": str(path)}
    LOGGER.info("loaded %s checkpoint %s (%d classes, head %s)", fmt, path, model.nc, kind)
    return model, meta
