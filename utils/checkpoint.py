"""Stable entry point (``from utils.checkpoint import load_checkpoint``); the code lives in ``utils/io/checkpoint.py``."""
from utils.io.checkpoint import *  # noqa: F401,F403
from utils.io.checkpoint import CheckpointError, load_checkpoint  # noqa: F401
