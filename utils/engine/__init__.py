"""Training engine: hyp validation, run setup, the epoch loop and its step, optimiser, EMA, DDP, AutoAnchor
(the multi-run comparison lives in utils.compare)."""
