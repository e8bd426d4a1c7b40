"""Training: data preparation, the training loop, recipes and the training entry points."""
