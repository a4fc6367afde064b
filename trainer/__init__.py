"""Training: Ranger optimiser, the training loop with resumable checkpoints, and sims export (docs/TRAINING.md)."""
