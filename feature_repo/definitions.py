"""Feast definitions for `feast apply`; the objects themselves live in ml.features.definitions."""

import os
from pathlib import Path

from ml.features.definitions import definitions

# Feast has already expanded feature_store.yaml when it imports this file: without STOCKQ_VAR_DIR the
# registry path would be the literal "${STOCKQ_VAR_DIR}/...", a folder created inside feature_repo/.
# Stopping here happens before Feast opens the registry, so nothing is written.
if not os.environ.get("STOCKQ_VAR_DIR"):
    raise SystemExit(
        "STOCKQ_VAR_DIR is not set: feature_store.yaml puts the registry under it. Run, from feature_repo/:\n"
        "  STOCKQ_VAR_DIR=$(cd .. && pwd)/var feast apply"
    )
_VAR_DIR = Path(os.environ["STOCKQ_VAR_DIR"]).resolve()

ticker, daily_features, model_window = definitions(_VAR_DIR / "features")
