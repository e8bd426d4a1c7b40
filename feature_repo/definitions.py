"""Feast definitions for `feast apply`; the objects themselves live in ml.feature_defs."""

import os
from pathlib import Path

from ml.feature_defs import definitions

_VAR_DIR = Path(os.environ.get("STOCKQ_VAR_DIR", Path(__file__).resolve().parent.parent / "var")).resolve()

ticker, daily_features, model_window = definitions(_VAR_DIR / "features")
