"""Serving: forecasts from the champion models and their charts."""
