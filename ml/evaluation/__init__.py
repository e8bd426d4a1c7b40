"""Evaluation: the walk-forward over years, the baselines, the panel statistics and promotion."""
