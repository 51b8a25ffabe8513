"""What the command-line tools share: errors a user can act on become one log line and exit status 1,
a --help that shows the defaults, and argparse value types that refuse nonsense numbers (exit
status 2, as argparse's own errors)."""
from __future__ import annotations

import argparse
import logging
import reprlib
import signal
from collections.abc import Callable
from typing import Any


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 1, 4, 4, 40, 40


def short_repr(value: Any) -> str:
    """``repr`` cut to one short line, for a value quoted in an error message (a list that shares
    itself nine levels deep must not be expanded to billions of items while the message is formatted)."""
    return _SHORT.repr(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and appends ``(default: X)`` to every option that has a value by default.

    Required options, flags and options whose default says nothing (None, '') get nothing, and
    neither does a help text that already explains its default in words.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.default is None or action.default is False or action.default in ("", argparse.SUPPRESS)
        if silent or action.required or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that name a bad input (file, key, value), not a bug: no traceback for these.

    FloatingPointError is a training that diverged (non-finite weights or losses, from the hyp
    values); its message names the last finite checkpoint.
    """
    from utils.io.checkpoint import CheckpointError
    from utils.dataloaders import DatasetError
    from utils.engine.hyp import HypError
    from utils.io.paths import RunDirError

    return (HypError, DatasetError, CheckpointError, RunDirError, FileNotFoundError, ValueError,
            FloatingPointError)


def run_cli(fn: Callable[[], Any], logger: str) -> int:
    """Call ``fn``; a :func:`user_errors` error is logged as ``error: ...`` on ``logger`` and gives 1, else 0."""
    try:
        fn()
    except user_errors() as e:
        logging.getLogger(logger).error("error: %s", e)
        return 1
    return 0


def interrupt_on_signals() -> None:
    """SIGTERM stops a CLI as Ctrl-C does (KeyboardInterrupt: its clean-up runs); the first SIGINT or
    SIGTERM only, so that a second one (a group kill after a Ctrl-C) cannot break that clean-up."""

    def interrupt(signum: int, frame: Any) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, interrupt)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--epochs 0`` is refused before anything runs)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# The largest image side a network input may have: a 8192 x 8192 batch image is 805 MB as float32
# (YOLOv5's largest models train at 1280). ``--img 100000`` is refused before anything is allocated.
MAX_IMGSZ = 8192


def image_size(text: str) -> int:
    """argparse type: an image side in pixels, 1..MAX_IMGSZ."""
    value = positive_int(text)
    if value > MAX_IMGSZ:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_IMGSZ} pixels, got {text}")
    return value


def hw_imgsz(parser: argparse.ArgumentParser, values: list[int] | None) -> list[int] | None:
    """``--imgsz`` given as 1 or 2 integers -> [h, w] (one value: a square); None (not given) stays None."""
    if values is None:
        return None
    if len(values) > 2:
        parser.error("--imgsz takes 1 or 2 integers")
    return values * 2 if len(values) == 1 else list(values)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


MAX_SEED = 2 ** 31 - 1  # numpy takes seeds below 2**32; the trainer adds the rank and an offset


def seed(text: str) -> int:
    """argparse type: a random seed, 0..MAX_SEED."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{MAX_SEED}, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def add_max_pixels_flag(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels``: the one pixel limit of every image reader (``utils.data.verify.set_max_pixels``)."""
    from utils.data.verify import DEFAULT_MAX_IMAGE_PIXELS

    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="refuse images with more pixels than this (decompression bombs); read from the "
                             "image header before decoding")


def add_precision_flag(parser: argparse.ArgumentParser, inference: bool = False) -> None:
    """``--precision auto|fp32|bf16``: the forward pass's autocast (``utils.engine.precision``); the help
    follows the defaults set there."""
    from utils.engine.precision import CPU_BF16_BY_DEFAULT, CPU_BF16_INFERENCE, PRECISIONS

    native = "bf16 on CPUs with native bfloat16 (AVX512-BF16 or AMX), else fp32"
    if inference:
        auto = f"{native if CPU_BF16_INFERENCE else 'fp32'}; --half for float16 on CUDA"
    else:
        cpu = native if CPU_BF16_BY_DEFAULT else "fp32 on CPU (bf16 stays opt-in until measured equal: docs/cpu_bf16.md)"
        auto = f"fp16 AMP with a GradScaler on CUDA, {cpu}"
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help=f"forward-pass precision; auto: {auto}; bf16 where not native runs, slowly, "
                             "with a warning")
