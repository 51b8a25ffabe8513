"""Data loading pieces; import the public API from ``utils.dataloaders``."""
