"""Training infrastructure: checkpoints, mixed precision, logs."""
