"""What the command-line tools share: errors a user can act on become one log line and exit status 1,
and a --help that shows the defaults."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any


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
    """Errors that name a bad input (file, key, value), not a bug: no traceback for these."""
    from utils.io.checkpoint import CheckpointError
    from utils.dataloaders import DatasetError
    from utils.engine.hyp import HypError

    return (HypError, DatasetError, CheckpointError, FileNotFoundError, ValueError)


def run_cli(fn: Callable[[], Any], logger: str) -> int:
    """Call ``fn``; a :func:`user_errors` error is logged as ``error: ...`` on ``logger`` and gives 1, else 0."""
    try:
        fn()
    except user_errors() as e:
        logging.getLogger(logger).error("error: %s", e)
        return 1
    return 0

