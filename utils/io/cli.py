"""What the command-line tools share: errors a user can act on become one log line and exit status 1."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any


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
