"""The training loop and its parts: step plan, run folder, lock, log, checkpoints, precision, stop, DDP."""
