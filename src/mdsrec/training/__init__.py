"""Training: the one trainer (trainer) and checkpoints (checkpoint)."""
