"""Evaluation: baselines, scoring, statistics, calibration, the walk-forward backtest and promotion."""
