"""``--resume``: which checkpoint, and which options the resumed run trains with.

A resumed run keeps the options its checkpoint recorded. A setting given anew (a flag on the command
line, an edited opt.yaml, an edited ``train_defaults`` in the dataset YAML) is honoured when it does not
change what is trained (device, workers, precision, validation and saving, logging), and refused in one
line naming it otherwise (model, data, hyp, schedule, batch, image size, seed): a run cannot change
those mid-way, and taking them silently from the checkpoint would ignore the user.
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from utils.core.errors import UserError
from utils.core.text import short_repr
from utils.core.yaml_file import YamlFileError, load_yaml
from utils.engine.config import DEFAULT_PROJECT, DEFAULTS, FALLBACK, FIELDS, options_of
from utils.engine.distributed import DistInfo
from utils.io.checkpoint import CheckpointError, read_checkpoint

LOGGER = logging.getLogger(__name__)
# Options a resumed run may change: how it runs, not what it trains
RESUME_SAFE = frozenset({"track", "device", "workers", "quiet", "noplots", "noval", "nosave", "save_period", "patience",
                         "precision", "max_pixels", "cache", "noautoanchor"})
# Where the run lives, set by --resume itself
RESUME_OWN = frozenset({"resume", "weights", "save_dir", "project", "name", "exist_ok", "train_defaults"})


def in_run_folder(last: Path) -> bool:
    """Whether a checkpoint sits in a run folder: ``<run>/weights/last.pt`` next to ``<run>/opt.yaml``."""
    return last.parent.name == "weights" and (last.parent.parent / "opt.yaml").is_file()


def latest_run(project: Path) -> tuple[Path, list[Path]]:
    """The last.pt of the newest run under ``project`` that has one (by its last write), and the run
    folders started after that write that have none (killed before their first epoch ended)."""
    lasts = sorted((p for p in project.glob("**/weights/last.pt") if in_run_folder(p)), key=lambda p: p.stat().st_mtime)
    if not lasts:
        raise FileNotFoundError(f"--resume: no run with a weights/last.pt under {project}")
    since = lasts[-1].stat().st_mtime
    newer = sorted(f.parent for f in project.glob("**/opt.yaml")
                   if f.stat().st_mtime > since and not (f.parent / "weights" / "last.pt").exists())
    return lasts[-1], newer


def _same(key: str, run_value: Any, value: Any) -> bool:
    """Whether ``value`` asks for what the run has (lists and tuples alike; an image size that the
    stride rounding turned into the run's)."""
    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, (list, tuple)) else v

    if key == "imgsz" and isinstance(run_value, int) and isinstance(value, int) and value > 0:
        return run_value in (value, math.ceil(value / 32) * 32, math.ceil(value / 64) * 64)
    return norm(run_value) == norm(value)


def _change(options: dict[str, Any], key: str, value: Any, where: str, path: Path, say: bool) -> None:
    """Honour a safe change of a resumed run's option, refuse any other (one line naming ``where``)."""
    if key not in RESUME_SAFE:
        raise CheckpointError(f"--resume: {where} asks for {key}={short_repr(value)} but the run trained with "
                              f"{short_repr(options[key])}; a run cannot change it mid-way: drop the change, or start "
                              f"a new run with --weights {path}")
    if say:
        LOGGER.info("--resume: %s sets %s=%s (the run had %s)", where, key, value, options[key])
    options[key] = value


def _opt_yaml_edits(options: dict[str, Any], run_dir: Path, path: Path, say: bool) -> None:
    """Apply the edits of the run's opt.yaml (YOLOv5 resumes from that file) to the checkpoint's options."""
    file = run_dir / "opt.yaml"
    try:
        edited = load_yaml(file)
    except YamlFileError as e:
        raise UserError(f"--resume: {e}") from None
    if not isinstance(edited, dict):
        raise UserError(f"--resume: {file} must be a mapping of options, got {short_repr(edited)}")
    for key in FIELDS:
        if key in edited and key not in RESUME_OWN and not _same(key, options[key], edited[key]):
            _change(options, key, edited[key], f"{file} (key '{key}')", path, say)


def _command_line_changes(options: dict[str, Any], cli: dict[str, Any], path: Path, say: bool) -> None:
    """Apply the flags given with --resume (those that differ from train.py's defaults)."""
    for key in FIELDS:
        value = cli[key]
        if key in RESUME_OWN or _same(key, getattr(DEFAULTS, key), value) or _same(key, options[key], value):
            continue
        flag = "--img" if key == "imgsz" else "--" + key.replace("_", "-")
        _change(options, key, value, f"{flag} {value}" if not isinstance(value, bool) else flag, path, say)


def resume_options(opt: argparse.Namespace, info: DistInfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options and checkpoint of the run to resume: ``--resume`` = True (the newest run with a
    last.pt under --project) or a path to a last.pt. The resumed run keeps its own options (see the
    module's docstring for what it may change) and writes only into its own run folder; a last.pt
    outside one (a backup copy) is refused, unless --project / --name name a new folder for it."""
    cli = options_of(opt)
    new_dir = cli["project"] is not None or cli["name"] is not None
    newer: list[Path] = []
    if cli["resume"] is True or cli["resume"] == "":
        path, newer = latest_run(Path(cli["project"] or DEFAULT_PROJECT))
    else:
        path = Path(cli["resume"])
    ckpt = read_checkpoint(path)
    if ckpt.get("optimizer") is None:
        raise CheckpointError(f"--resume: {path} has no optimizer state (the run finished); "
                              f"start a new run with --weights {path}")
    own = in_run_folder(path)
    if not own and not new_dir:
        raise CheckpointError(f"--resume: {path} is not inside a run folder (<run>/weights/last.pt next to "
                              "<run>/opt.yaml); resume it into a new folder with --project/--name")
    if not isinstance(ckpt.get("opt"), dict):
        raise CheckpointError(f"--resume: {path} records no training options; start a new run with --weights {path}")
    options = options_of(ckpt["opt"])
    if own:
        _opt_yaml_edits(options, path.parent.parent, path, info.main)
    _command_line_changes(options, cli, path, info.main)
    options.update(resume=str(path), weights=str(path))
    if own:
        options["save_dir"] = str(path.parent.parent)
    else:
        options.update(project=cli["project"] or str(DEFAULT_PROJECT), name=cli["name"] or "exp", save_dir=None,
                       exist_ok=False)
    if info.main:  # said once under torchrun
        if newer:
            LOGGER.warning("WARNING: --resume: resuming %s (epoch %d done), the newest run with a last.pt; newer "
                           "runs without one (stopped before their first epoch ended): %s", path.parent.parent,
                           ckpt["epoch"], ", ".join(map(str, newer)))
        LOGGER.info("resuming training from %s (epoch %d done)%s", path, ckpt["epoch"],
                    "" if own else f" into a new run folder under {options['project']}")
    return options, ckpt


def check_train_defaults(options: dict[str, Any], block: dict[str, Any], data_file: str,
                         run_hyp: dict[str, Any]) -> None:
    """On resume: the dataset YAML's ``train_defaults`` as read now against the run's. An edit that
    would change what the run trains is refused naming the key; one the run never took (its value came
    from the command line) is said and changes nothing."""
    before = options.get("train_defaults")
    if before is None:  # a checkpoint from before the block was recorded: hyp overrides against the run's hyp
        before = {**block, "hyp": {k: run_hyp.get(k) for k in block.get("hyp") or {}}}
    where = f"--resume: {data_file} train_defaults"
    for key in FALLBACK:
        if before.get(key) != block.get(key):
            if _same(key, options.get(key), before.get(key, FALLBACK[key])):  # the run's value came from there
                raise CheckpointError(f"{where} key '{key}' is now {short_repr(block.get(key))}, the run trained with "
                                      f"{short_repr(options.get(key))}; a run cannot change it mid-way: undo the edit, "
                                      f"or start a new run with --weights {options['resume']}")
            LOGGER.info("%s key '%s' changed; this run took %s from the command line", where, key, options.get(key))
    old_hyp, new_hyp = before.get("hyp") or {}, block.get("hyp") or {}
    for key in sorted(set(old_hyp) | set(new_hyp), key=str):
        if old_hyp.get(key) != new_hyp.get(key):
            raise CheckpointError(f"{where} key 'hyp.{key}' is now {short_repr(new_hyp.get(key, '(removed)'))}, "
                                  f"the run trained with {short_repr(run_hyp.get(key))}; a run cannot change its hyp "
                                  f"mid-way: undo the edit, or start a new run with --weights {options['resume']}")
