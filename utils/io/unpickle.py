"""Reading torch zip files without trusting them: official YOLOv5 ``.pt`` files are pickled module
trees, read by ``_RestrictedUnpickler``, which maps every class the file names to an inert stand-in
(nothing from the file is ever called) and refuses any other global; tensors whose declared size
is implausible for their compressed size are refused before they are inflated.
"""
from __future__ import annotations

import _compat_pickle
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from utils.core.text import short_repr
from utils.core.errors import UserError


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the model."""


# An entry inflating more than this from its compressed size is a decompression bomb: torch.save
# stores every entry (tensors and data.pkl) uncompressed, and real weights deflate by ~1.1x.
MAX_INFLATION = 50
INFLATION_MIN_BYTES = 1 << 20  # small tensors (all-zero buffers) may deflate well


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


def check_storage_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse, before anything is inflated, an entry (a stored tensor, data.pkl, any other) whose
    declared size is implausible for its compressed size (a 1 MB file must not allocate gigabytes)."""
    for info in archive.infolist():
        if info.file_size > INFLATION_MIN_BYTES and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
            raise CheckpointError(f"refusing to load '{path}': {info.filename} declares {info.file_size} "
                                  f"bytes stored in {info.compress_size} (a decompression bomb?)")


def restricted_load(path: Path) -> Any:
    """Unpickle a zip-format torch file with ``_RestrictedUnpickler``; executes nothing from it."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_storage_sizes(archive, path)
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


def inert_state_dict(module: Any, prefix: str = "") -> dict[str, torch.Tensor]:
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
            out.update(inert_state_dict(child, f"{prefix}{name}."))
    return out


def _names_list(names: Any, nc: int, path: Path) -> list[str]:
    if isinstance(names, dict):
        if not all(isinstance(k, int) for k in names):
            raise CheckpointError(f"'{path}': the model's 'names' keys must be class ids (integers)")
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)) and names:
        return [str(n) for n in names]
    return [str(i) for i in range(nc)]


def from_official(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """Our checkpoint layout from an unpickled official YOLOv5 checkpoint dict."""
    tree = raw.get("ema") if isinstance(raw.get("ema"), _Inert) else raw.get("model")
    if not isinstance(tree, _Inert) or not isinstance(getattr(tree, "yaml", None), dict):
        raise CheckpointError(f"'{path}' holds no YOLOv5 model (no 'model' module with a yaml dict)")
    yaml_dict = dict(tree.yaml)
    if isinstance(yaml_dict.get("nc"), bool) or not isinstance(yaml_dict.get("nc"), int):
        raise CheckpointError(f"'{path}': the model YAML's 'nc' must be an integer, got {short_repr(yaml_dict.get('nc'))}")
    opt = raw.get("opt") if isinstance(raw.get("opt"), dict) else {}
    hyp = opt.get("hyp") or getattr(tree, "hyp", None)  # opt: as the user wrote it; model.hyp is rescaled
    return {
        "format": "yolov5-official",
        # YOLOv5 <= v5.0 kept Detect.anchor_grid as a buffer; it is derived from anchors
        "model": {k: v for k, v in inert_state_dict(tree).items() if not k.endswith(".anchor_grid")},
        "ema": None,
        "yaml": yaml_dict,
        "head": "anchor",
        "names": _names_list(getattr(tree, "names", None), yaml_dict["nc"], path),
        "epoch": raw.get("epoch", -1),
        "best_fitness": raw.get("best_fitness"),
        "hyp": hyp if isinstance(hyp, dict) else {},
        "opt": opt,
    }
