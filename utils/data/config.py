"""Dataset YAML files (YOLOv5 form) -> a checked dict with absolute paths.

Keys::

    path: ../datasets/shapes   # dataset root; relative -> against the YAML file's own folder
    train: images/train        # relative -> against `path` (or the YAML's folder without `path`)
    val: images/val            # a folder, a .txt list of images, or a list of those
    test:                      # optional
    names: [circle, square]    # list, or dict {0: circle, 1: square} with keys 0..nc-1
    nc: 2                      # optional, must equal len(names)

Project keys (non-standard, optional):

    generate: shapes           # build the built-in dataset into `path` when it is missing
    generate_args: {n_train: 400}
    convert: voc               # convert a Pascal VOC tree (or LabelImg folder) into `path` when it is missing
    source: ../../shared/datasets/bccd   # the VOC root, relative to the YAML's folder
    splits: [train, val, test] # VOC ImageSets/Main lists to convert (default: those found)

``download:`` is never executed (no network access); it is ignored with a warning.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from utils.core.text import short_repr
from utils.core.yaml_file import YamlFileError, load_yaml
from utils.core.errors import UserError

LOGGER = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class DatasetError(UserError):
    """A dataset YAML that cannot be used; the message names the file, the key and the path."""


def _names_list(names: Any, yaml_file: Path) -> list[str]:
    if isinstance(names, dict):
        bad = [k for k in names if isinstance(k, bool) or not isinstance(k, int)]
        if bad:
            raise DatasetError(f"{yaml_file}: 'names' keys must be the integers 0..{len(names) - 1}, got {bad[0]!r}")
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DatasetError(f"{yaml_file}: 'names' keys must be 0..{len(keys) - 1}, got {keys}")
        return [str(names[k]) for k in keys]
    if isinstance(names, (list, tuple)) and names:
        return [str(n) for n in names]
    raise DatasetError(f"{yaml_file}: 'names' must be a non-empty list or a dict {{0: name, ...}}")


def _prepare_root(data: dict, root: Path, yaml_file: Path) -> None:
    """Run the generation / conversion hook when the dataset root is missing."""
    if data.get("generate"):
        if data["generate"] != "shapes":
            raise DatasetError(f"{yaml_file}: unknown 'generate: {data['generate']}' (choose: shapes)")
        from utils.data.shapes_dataset import ensure_shapes_dataset

        args = data.get("generate_args") or {}
        if not isinstance(args, dict):
            raise DatasetError(f"{yaml_file}: 'generate_args' must be a mapping, got {short_repr(args)}")
        try:
            ensure_shapes_dataset(root, **args)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{yaml_file}: key 'generate_args': {e}") from None
    elif data.get("convert") and not root.exists():
        if data["convert"] != "voc":
            raise DatasetError(f"{yaml_file}: unknown 'convert: {data['convert']}' (choose: voc)")
        if not data.get("source"):
            raise DatasetError(f"{yaml_file}: 'convert: voc' needs a 'source:' VOC folder")
        source = (yaml_file.parent / str(data["source"])).resolve()
        if not source.is_dir():
            raise DatasetError(f"{yaml_file}: key 'source': VOC folder {source} does not exist")
        from data.converters.voc2yolo import convert_voc

        LOGGER.info("Converting VOC dataset %s -> %s", source, root)
        convert_voc(source, root, names=_names_list(data.get("names"), yaml_file),
                    splits=data.get("splits"), write_yaml=False)


def _read_yaml(yaml_path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(absolute path, top-level mapping) of a dataset YAML; a DatasetError naming the file otherwise."""
    yaml_file = Path(yaml_path).resolve()
    if yaml_file.is_dir():
        inside = sorted(p.name for p in yaml_file.iterdir() if p.suffix in (".yaml", ".yml"))
        hint = (f"; it holds {', '.join(str(Path(yaml_path) / n) for n in inside[:3])}" if inside
                else "; it holds no .yaml file (the converters in data/converters write one)")
        raise DatasetError(f"--data {yaml_path} is a folder: give the dataset YAML file{hint}")
    if not yaml_file.is_file():
        raise DatasetError(f"dataset YAML {yaml_path} does not exist")
    try:
        data = load_yaml(yaml_file) or {}
    except YamlFileError as e:
        raise DatasetError(str(e)) from None
    if not isinstance(data, dict):
        raise DatasetError(f"{yaml_file}: expected a mapping at the top level")
    return yaml_file, data


def dataset_names(yaml_path: str | Path) -> list[str]:
    """The class names of a dataset YAML, read without generating or converting anything (so a class
    count that does not fit a checkpoint is found before BCCD's conversion, say)."""
    yaml_file, data = _read_yaml(yaml_path)
    return _names_list(data.get("names"), yaml_file)


def check_dataset(yaml_path: str | Path) -> dict[str, Any]:
    """Load and check a dataset YAML. Returns a new dict.

    Output keys: ``path`` (absolute str), ``train``/``val``/``test`` (absolute str, list of str, or
    None), ``names`` (list of str), ``nc`` (int), ``yaml_file`` (absolute str), plus other keys as
    given. Relative ``path`` is resolved against the YAML file's folder (one rule, independent of
    the current directory); relative split entries against ``path``. Raises DatasetError naming the
    YAML, the key and the path when something is missing (after the generate/convert hooks ran).
    """
    yaml_file, data = _read_yaml(yaml_path)
    if "download" in data:
        LOGGER.warning("%s: ignoring 'download:' (this project never downloads data)", yaml_file)
    names = _names_list(data.get("names"), yaml_file)
    if "nc" in data and (isinstance(data["nc"], bool) or not isinstance(data["nc"], int)):
        raise DatasetError(f"{yaml_file}: 'nc' must be an integer, got {short_repr(data['nc'])}")
    if "nc" in data and data["nc"] != len(names):
        raise DatasetError(f"{yaml_file}: nc={data['nc']} but {len(names)} names given")
    root = Path(data["path"]) if data.get("path") else yaml_file.parent
    root = (root if root.is_absolute() else yaml_file.parent / root).resolve()
    _prepare_root(data, root, yaml_file)

    out = dict(data, path=str(root), names=names, nc=len(names), yaml_file=str(yaml_file))
    for key in SPLITS:
        if data.get(key) is None:
            if key != "test":
                raise DatasetError(f"{yaml_file}: key '{key}' is missing")
            out[key] = None
            continue
        entries = data[key] if isinstance(data[key], (list, tuple)) else [data[key]]
        paths = [str(p if p.is_absolute() else (root / p).resolve()) for p in map(Path, map(str, entries))]
        for p in paths:
            if not Path(p).exists():
                raise DatasetError(f"{yaml_file}: key '{key}': path {p} does not exist")
            if not Path(p).is_relative_to(root):
                LOGGER.warning("%s: key '%s' reads %s, outside the dataset root %s", yaml_file, key, p, root)
        out[key] = paths if isinstance(data[key], (list, tuple)) else paths[0]
    return out
