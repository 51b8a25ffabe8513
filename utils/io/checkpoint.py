"""Checkpoints: our plain-data format, and read-only import of official YOLOv5 ``.pt`` files.

Our format is a dict of plain data (tensors, dicts, lists, numbers, strings) that loads with
``torch.load(path, weights_only=True)``. Official YOLOv5 files are pickled module trees; they
are read by ``_RestrictedUnpickler``, which maps every class the file names to an inert
stand-in (nothing from the file is ever called) and refuses any other global.
"""
from __future__ import annotations

import _compat_pickle
import argparse
import datetime
import logging
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path, PurePath
from typing import Any

import torch
from torch import nn

from models.yolo import Model

LOGGER = logging.getLogger(__name__)
FORMAT_TAG = "yolo-lab-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the model."""


class NonFiniteCheckpoint(CheckpointError):
    """A checkpoint about to be written holds NaN or inf values; nothing was written."""


# A stored tensor inflating more than this from its compressed size is a decompression bomb:
# torch.save stores tensors uncompressed, and real weights deflate by ~1.1x.
MAX_INFLATION = 50
INFLATION_MIN_BYTES = 1 << 20  # small tensors (all-zero buffers) may deflate well


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
    if isinstance(x, dict):
        return {k if isinstance(k, (int, str)) else str(k): _plain(v, f"{where}.{k}") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v, f"{where}[{i}]") for i, v in enumerate(x))
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return x.item()
    LOGGER.warning("checkpoint: storing %s (%s) as a string", where, type(x).__name__)
    return str(x)


def _float_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict on CPU with floating tensors as float32 (integer buffers kept)."""
    return {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu())
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


def nonfinite_tensors(x: Any, where: str = "") -> list[str]:
    """Names (``model/model.0.conv.weight``) of the floating tensors in ``x`` holding NaN or inf."""
    if isinstance(x, torch.Tensor):
        return [where] if x.is_floating_point() and not bool(torch.isfinite(x).all()) else []
    if isinstance(x, dict):
        return [n for k, v in x.items() for n in nonfinite_tensors(v, f"{where}/{k}" if where else str(k))]
    if isinstance(x, (list, tuple)):
        return [n for i, v in enumerate(x) for n in nonfinite_tensors(v, f"{where}[{i}]")]
    return []


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path} ({e.strerror or e})") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path} ({' '.join(str(e).split())[:200]}); "
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


# --------------------------------------------------------------------------- restricted reading

class _Inert:
    """Stand-in for a class named in an official checkpoint: only holds the pickled state."""

    _origin = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<inert {self._origin}>"


_YOLOV5_CLASSES = {
    "models.yolo": {"Model", "DetectionModel", "BaseModel", "Detect", "SegmentationModel", "Segment",
                    "ClassificationModel"},
    "models.common": {"Conv", "DWConv", "DWConvTranspose2d", "TransformerLayer", "TransformerBlock",
                      "Bottleneck", "BottleneckCSP", "CrossConv", "C3", "C3x", "C3TR", "C3SPP", "C3Ghost",
                      "SPP", "SPPF", "Focus", "GhostConv", "GhostBottleneck", "Contract", "Expand",
                      "Concat", "Proto", "Classify"},
    "models.experimental": {"CrossConv", "Sum", "MixConv2d", "Ensemble"},
}
_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
_INERT_CACHE: dict[str, type] = {}


def _inert_class(qualname: str) -> type:
    if qualname not in _INERT_CACHE:
        _INERT_CACHE[qualname] = type(qualname.rsplit(".", 1)[-1], (_Inert,), {"_origin": qualname})
    return _INERT_CACHE[qualname]


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


def _path(*parts: Any) -> str:
    return "/".join(str(p) for p in parts)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch", "Size"): tuple,
    **{("pathlib", n): _path for n in ("Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for torch zip files that only admits what a YOLOv5 checkpoint needs."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file)
        self._archive, self._prefix, self._source = archive, prefix, source
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 (Python 2) spellings
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        known = name in _YOLOV5_CLASSES.get(module, ())
        torch_layer = module.startswith("torch.nn.modules.") and name.isidentifier() and name[:1].isupper()
        if known or torch_layer:
            return _inert_class(f"{module}.{name}")
        raise CheckpointError(f"refusing to load '{self._source}': it asks for global '{module}.{name}', "
                              "which a YOLOv5 checkpoint never needs")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        """('storage', dtype, key, location, numel) -> flat tensor over data/<key>."""
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise CheckpointError(f"'{self._source}': unsupported persistent id {pid!r:.60}")
        dtype, key = pid[1], str(pid[2])
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"'{self._source}': unsupported storage type {dtype!r:.60}")
        if key not in self._storages:
            name = f"{self._prefix}data/{key}"
            declared = self._archive.getinfo(name).file_size
            numel = pid[4] if len(pid) > 4 and isinstance(pid[4], int) else None
            if numel is not None and numel * dtype.itemsize != declared and dtype != torch.uint8:
                raise CheckpointError(f"'{self._source}': tensor storage {key} declares {numel} elements "
                                      f"but holds {declared} bytes")
            raw = bytearray(self._archive.read(name))
            self._storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self._storages[key]


def _check_storage_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse, before anything is inflated, a stored tensor whose declared size is implausible
    for its compressed size (a 1 MB file must not allocate gigabytes)."""
    for info in archive.infolist():
        if "/data/" in info.filename or info.filename.startswith("data/"):
            if info.file_size > INFLATION_MIN_BYTES and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
                raise CheckpointError(f"refusing to load '{path}': {info.filename} declares {info.file_size} "
                                      f"bytes stored in {info.compress_size} (a decompression bomb?)")


def _restricted_load(path: Path) -> Any:
    """Unpickle a zip-format torch file with ``_RestrictedUnpickler``; executes nothing from it."""
    try:
        with zipfile.ZipFile(path) as archive:
            _check_storage_sizes(archive, path)
            pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not pkl:
                raise CheckpointError(f"'{path}' is not a torch checkpoint (no data.pkl inside)")
            prefix = pkl[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"little", b""):
                raise CheckpointError(f"'{path}' was written on a big-endian machine; not supported")
            with archive.open(pkl[0]) as f:
                return _RestrictedUnpickler(f, archive, prefix, path.name).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, KeyError, OSError, RuntimeError,
            TypeError, ValueError, IndexError, AttributeError) as e:
        raise CheckpointError(f"'{path}' is truncated or not a checkpoint ({type(e).__name__}: {e})") from e


def _inert_state_dict(module: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Walk an inert module tree (_parameters, persistent _buffers, _modules) like state_dict()."""
    out: dict[str, torch.Tensor] = {}
    skip = getattr(module, "_non_persistent_buffers_set", set()) or set()
    for name, p in (getattr(module, "_parameters", None) or {}).items():
        if p is not None:
            out[prefix + name] = p
    for name, b in (getattr(module, "_buffers", None) or {}).items():
        if b is not None and name not in skip:
            out[prefix + name] = b
    for name, child in (getattr(module, "_modules", None) or {}).items():
        if child is not None:
            out.update(_inert_state_dict(child, f"{prefix}{name}."))
    return out


def _names_list(names: Any, nc: int) -> list[str]:
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)) and names:
        return [str(n) for n in names]
    return [str(i) for i in range(nc)]


def _from_official(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """Our checkpoint layout from an unpickled official YOLOv5 checkpoint dict."""
    tree = raw.get("ema") if isinstance(raw.get("ema"), _Inert) else raw.get("model")
    if not isinstance(tree, _Inert) or not isinstance(getattr(tree, "yaml", None), dict):
        raise CheckpointError(f"'{path}' holds no YOLOv5 model (no 'model' module with a yaml dict)")
    yaml_dict = dict(tree.yaml)
    opt = raw.get("opt") if isinstance(raw.get("opt"), dict) else {}
    hyp = opt.get("hyp") or getattr(tree, "hyp", None)  # opt: as the user wrote it; model.hyp is rescaled
    return {
        "format": "yolov5-official",
        # YOLOv5 <= v5.0 kept Detect.anchor_grid as a buffer; it is derived from anchors
        "model": {k: v for k, v in _inert_state_dict(tree).items() if not k.endswith(".anchor_grid")},
        "ema": None,
        "yaml": yaml_dict,
        "head": "anchor",
        "names": _names_list(getattr(tree, "names", None), int(yaml_dict.get("nc", 0))),
        "epoch": raw.get("epoch", -1),
        "best_fitness": raw.get("best_fitness"),
        "hyp": hyp if isinstance(hyp, dict) else {},
        "opt": opt,
    }


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
            _check_storage_sizes(archive, path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"'{path}' is truncated or not a checkpoint ({type(e).__name__}: {e})") from None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for corrupt or unsafe files
        _restricted_load(path)  # raises the clearer error: truncated, or which global is refused
        ckpt = None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_TAG:
        raise CheckpointError(f"'{path}' is not a checkpoint written by this project (an official "
                              "YOLOv5 file can be loaded with load_checkpoint, not resumed)")
    return ckpt


def _build_model(ckpt: dict[str, Any], path: Path) -> Model:
    weights = ckpt["ema"] if ckpt.get("ema") else ckpt["model"]
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
    return model.float().eval()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    head: str | None = None) -> tuple[Model, dict[str, Any]]:
    """Model in eval mode (float32, EMA weights if present) and meta data from a checkpoint.

    Reads our format and official YOLOv5 files alike, without executing anything from the
    file. ``head``, when given, must equal the head kind the checkpoint was trained with.
    meta: names, head, yaml, epoch, hyp, format ('ours' | 'yolov5-official'), best_fitness, opt.
    """
    path = _check_file(path)
    raw = _restricted_load(path)
    if isinstance(raw, dict) and raw.get("format") == FORMAT_TAG:
        ckpt, fmt = raw, "ours"
    elif isinstance(raw, dict) and "model" in raw:
        ckpt, fmt = _from_official(raw, path), "yolov5-official"
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
