"""Training engine: hyp validation, run setup, the epoch loop and its step, optimiser, EMA, DDP, AutoAnchor,
and the multi-run comparison driver."""
