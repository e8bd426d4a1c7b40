"""The one settings object. Built at the edges (webapp, workers, CLI, bench) and passed down."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STOCKQ_", extra="ignore", populate_by_name=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Celery's broker. None: Redis at `redis_url`. `amqp://...` puts the queues on RabbitMQ (quorum queues,
    # redelivery the moment a consumer's connection drops); Redis stays the job registry, locks and caches.
    broker_url: str | None = None
    # Caches that may be evicted (prediction cache, Feast online store) can live on their own Redis with an
    # LRU policy, so the broker's Redis can refuse writes (noeviction) instead of dropping jobs. None: the
    # broker's Redis.
    cache_redis_url: str | None = None
    # Feast's online store lives on its own Redis DB so it never collides with Celery's keys.
    feast_redis_db: int = 1
    var_dir: Path = Path("./var")
    data_source: str = "auto"
    # Tenants: comma-separated `name:secret` (a bare secret is named after a hash prefix of it). Admin keys
    # see and cancel every tenant's jobs. No keys: the API serves loopback only, unless STOCKQ_AUTH=off.
    api_keys: SecretStr = SecretStr("")
    admin_keys: SecretStr = SecretStr("")
    auth: Literal["on", "off"] = "on"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    flower_port: int = 5555
    mlflow_ui_port: int = 5000
    # Where a browser reaches Flower and the MLflow UI: the console (GET /) links each job's task and run
    # there. None: the console's own host at flower_port / mlflow_ui_port (as `stockq up` serves them);
    # empty: no links.
    flower_ui_url: str | None = None
    mlflow_ui_url: str | None = None
    # `user:password` for Flower under `stockq up` (unset: generated once into the var dir).
    flower_auth: SecretStr | None = None
    # Per tenant (API key name, else client address) and endpoint class; empty disables one. flask-limiter
    # syntax. `rate_limit` is the budget of reads.
    rate_limit: str = "1200/minute"
    rate_limit_train: str = "30/minute"
    rate_limit_predict: str = "600/minute"
    rate_limit_agent: str = "60/minute"
    # Queued + running jobs one tenant may have at once (429 beyond).
    max_inflight: int = Field(200, ge=1)
    # `?wait=` and chart requests blocking a thread at once, per API process: beyond it they answer 202 at
    # once, so /health and submissions always find a thread (gunicorn runs 8 threads per process).
    max_waiting_per_process: int = Field(4, ge=0)
    api_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr = SecretStr("")

    window: int = Field(60, ge=10, le=250)
    horizon: int = 7
    feature_max_age_days: int = Field(7, ge=1)
    job_retention_s: int = 7 * 24 * 3600
    # Pings and charts are looked at once: their records go after minutes, not days.
    short_job_retention_s: int = 15 * 60
    # Charts and batch results live on the cache Redis for short_job_retention_s (workers/results.py); one
    # tenant may hold this many bytes there at once (about a thousand charts): past it its chart and batch
    # jobs fail `result_budget_exceeded` (GET /forecast answers 429) until older results expire.
    tenant_cache_bytes: int = Field(64 * 2**20, ge=1)
    prediction_cache_ttl_s: int = 3600
    model_cache_size: int = 16
    model_alias_check_s: float = 5.0
    torch_threads: int = 1
    train_time_limit_s: int = 3600
    default_epochs: int = 30  # the evaluated recipe's budget (ml.config.PanelModelConfig.epochs)
    # Train on only the last N calendar days of history (None: all of it).
    train_history_days: int | None = None
    auto_train_epochs: int = 5
    # Which panel the served global model learns from: every ingested ticker (`panel`) or the design's
    # ^GSPC-only parent (`gspc`); an evaluation without a `universe` of its own evaluates this one.
    parent_universe: Literal["panel", "gspc"] = "panel"
    # The `evaluate` job (ml.evaluation.run): a walk-forward refit every `evaluate_refit_months` from
    # `evaluate_first_year`, a decision every trading day, on the training queue under a time limit of its
    # own (a refit per origin). Raising it past the training's: raise the GPU job's activeDeadlineSeconds
    # (compose/k8s/worker-training-gpu.yaml) with it.
    evaluate_first_year: int = Field(2005, ge=1900, le=2100)
    evaluate_refit_months: int = Field(12, ge=1, le=60)
    # Unset: the model's own defaults (ml.config.PanelModelConfig), the ones bench/skill.py measured.
    evaluate_epochs: int | None = Field(None, ge=1, le=500)  # the first origin's model, from scratch
    evaluate_warm_epochs: int | None = Field(None, ge=1, le=500)  # each later origin, from the last weights
    evaluate_stride: int | None = Field(None, ge=1, le=50)  # every stride-th decision day is a sample
    evaluate_bootstrap_reps: int = Field(1000, ge=50, le=100_000)
    evaluate_time_limit_s: int = Field(3600, ge=60)
    # How long a crashed auto-training can block the next request for the same ticker.
    singleflight_ttl_s: float = 120.0
    # `celery beat` (workers/scheduled.py, one active beat through a Redis lock): a 5-field crontab in UTC
    # or a number of seconds; empty disables it. Ingest + materialize the known tickers after the US close
    # (weekdays), then retrain the children whose stored data moved past what they were trained until,
    # then evaluate the served recipe again (the cards and the next promotion quote it).
    schedule_ingest: str = "30 22 * * 1-5"
    schedule_retrain: str = "0 2 * * *"
    schedule_evaluate: str = "0 3 * * *"

    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = 30.0
    llm_max_retries: int = 2
    agent_cache_ttl: int = 24 * 3600
    # Calibrated on tests/data/agent_question_pairs.json: no false hit at 0.90 (0.75 gave three).
    agent_cache_threshold: float = 0.90
    # An LLM that times out or answers garbage: rerun with the deterministic analyst (else fail the job).
    agent_llm_fallback: bool = True
    # `tenant`: an answer cached for one tenant's question is never served to another's.
    agent_cache_scope: Literal["tenant", "global"] = "tenant"

    # `stockq exporter`: backend-wide Prometheus figures (queues, workers, jobs, models).
    exporter_port: int = 9808

    # A running job's lease: renewed every lease_s / 3 by the process running it; a job whose worker stops
    # renewing is requeued (attempt + 1) within about lease_s, or failed `worker_lost` after max_attempts.
    lease_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    # Training checkpoints into its MLflow run at most this often (0: after every epoch).
    checkpoint_s: float = Field(0.0, ge=0)

    # API and worker logs: `json` lines carry each job's id, attempt, tenant, ticker and task as fields.
    log_format: Literal["text", "json"] = "text"

    mlflow_tracking_uri: str | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "STOCKQ_MLFLOW_TRACKING_URI")
    )
    qdrant_url: str | None = Field(None, validation_alias=AliasChoices("QDRANT_URL", "STOCKQ_QDRANT_URL"))
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_API_KEY", "STOCKQ_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("OPENAI_BASE_URL", "STOCKQ_OPENAI_BASE_URL")
    )

    @cached_property
    def var_path(self) -> Path:
        path = self.var_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.var_path / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.var_path / "mlartifacts").as_uri()

    @property
    def longest_task_s(self) -> int:
        """The longest hard time limit of any task: a message held unacked that long is not lost."""
        return max(self.train_time_limit_s, self.evaluate_time_limit_s) + 60

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def broker_is_amqp(self) -> bool:
        return urlparse(self.broker).scheme in ("amqp", "amqps", "pyamqp")

    @property
    def cache_url(self) -> str:
        return self.cache_redis_url or self.redis_url

    @property
    def feast_connection_string(self) -> str:
        """Feast's Redis online store wants `host:port,db=N[,password=...][,ssl=true]`."""
        url = urlparse(self.cache_url)
        parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}", f"db={self.feast_redis_db}"]
        if url.password:
            parts.append(f"password={url.password}")
        if url.scheme == "rediss":
            parts.append("ssl=true")
        return ",".join(parts)

    @property
    def feast_redis_url(self) -> str:
        url = urlparse(self.cache_url)
        return url._replace(path=f"/{self.feast_redis_db}").geturl()


def configure_process_env(settings: Settings) -> None:
    """Environment the ecosystem's libraries read themselves (called once at an edge)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MPLCONFIGDIR", str(settings.var_path / "mpl"))
