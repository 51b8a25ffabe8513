"""Files in and out: checkpoints, image/video sources, run folders and logs, plots and annotated pictures,
and the CLI error convention."""
