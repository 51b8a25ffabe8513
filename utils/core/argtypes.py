"""argparse value types that refuse nonsense numbers (exit status 2, as argparse's own errors), and a
--help layout that shows the defaults. The library's own limits (MAX_IMGSZ) live here too, so the
readers of model YAMLs and datasets check the same bound as the flags."""
from __future__ import annotations

import argparse


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
