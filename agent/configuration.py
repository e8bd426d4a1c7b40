"""The analyst's configuration: built once at an edge (workers.runtime.agent_config) and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

# Calibrated on tests/data/agent_question_pairs.json (all-MiniLM-L6-v2, cosine): the hardest different
# question scores 0.891 ("Should I buy AAPL?" vs "Should I sell AAPL?"), so 0.90 keeps false hits at zero
# on that set while 12 of its 30 paraphrases (recall 0.40) still hit.
CALIBRATED_CACHE_THRESHOLD = 0.90


@dataclass(frozen=True)
class AgentConfig:
    var_dir: Path
    llm_model: str = "gpt-4o-mini"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    llm_timeout_s: float = 30.0
    llm_max_retries: int = 2
    # What an LLM failure does to a job: True reruns it with the deterministic analyst (the report says
    # so), False fails it with LLMError.
    llm_fallback: bool = True
    max_revisions: int = 2
    cache_ttl_s: int = 24 * 3600
    cache_threshold: float = CALIBRATED_CACHE_THRESHOLD
    qdrant_url: str | None = None
    news_limit: int = 8
    news_timeout_s: float = 5.0

    @property
    def llm_enabled(self) -> bool:
        return bool(self.openai_api_key and self.openai_api_key.get_secret_value())

    @property
    def qdrant_path(self) -> Path:
        return self.var_dir / "qdrant"
