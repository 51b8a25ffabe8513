"""What the command-line tools share at the top: errors a user can act on become one log line and exit
status 1, signals that stop a run cleanly, and the flags several CLIs take. The argparse value types and
the --help layout are on the ground floor, ``utils.core.argtypes`` (re-exported here for the CLIs)."""
from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable
from typing import Any

from utils.core.argtypes import (MAX_IMGSZ, MAX_SEED, HelpFormatter, fraction, hw_imgsz, image_size,  # noqa: F401
                                 non_negative_int, positive_int, seed)
from utils.core.errors import UserError
from utils.core.images import IMG_FORMATS  # noqa: F401


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that name a bad input (file, key, value), not a bug: no traceback for these. The packages'
    errors subclass :class:`UserError`, so none of them is imported here.

    FloatingPointError is a training that diverged (non-finite weights or losses, from the hyp
    values); its message names the last finite checkpoint.
    """
    return UserError, FileNotFoundError, ValueError, FloatingPointError


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


def add_max_pixels_flag(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels``: the one pixel limit of every image reader (``utils.data.verify.set_max_pixels``)."""
    from utils.data.verify import DEFAULT_MAX_IMAGE_PIXELS

    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="refuse images with more pixels than this (decompression bombs); read from the "
                             "image header before decoding")


def add_precision_flag(parser: argparse.ArgumentParser, inference: bool = False) -> None:
    """``--precision auto|fp32|bf16``: the forward pass's autocast (``utils.core.precision``); the help
    follows the defaults set there."""
    from utils.core.precision import CPU_BF16_BY_DEFAULT, CPU_BF16_INFERENCE, PRECISIONS

    native = "bf16 on CPUs with native bfloat16 (AVX512-BF16 or AMX), else fp32"
    if inference:
        auto = f"{native if CPU_BF16_INFERENCE else 'fp32'}; --half for float16 on CUDA"
    else:
        cpu = native if CPU_BF16_BY_DEFAULT else "fp32 on CPU (bf16 stays opt-in until measured equal: docs/cpu_bf16.md)"
        auto = f"fp16 AMP with a GradScaler on CUDA, {cpu}"
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help=f"forward-pass precision; auto: {auto}; bf16 where not native runs, slowly, "
                             "with a warning")
