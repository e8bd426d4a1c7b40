"""Per-process dependencies of the tasks, built lazily on first use (after the prefork fork)."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

import redis

from ml.errors import ModelNotFound, StockqError
from ml.tickers import INDEX_TICKER, validate_ticker
from stockq.settings import Settings
from workers.counters import Counters
from workers.jobs import JobRegistry
from workers.leases import LeaseKeeper
from workers.model_cache import ModelCache
from workers.prediction_cache import PredictionCache

log = logging.getLogger(__name__)
# The run id of the latest evaluation any worker recorded: the model caches of every process read it.
EVALUATED_KEY = "stockq:evaluated"


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2, socket_timeout=10)

    @cached_property
    def jobs(self) -> JobRegistry:
        return JobRegistry(self.redis, self.settings.job_retention_s)

    @cached_property
    def leases(self) -> LeaseKeeper:
        return LeaseKeeper(self.jobs, self.settings.lease_s)

    @cached_property
    def counters(self) -> Counters:
        return Counters(self.redis)

    @cached_property
    def cache_redis(self) -> redis.Redis:
        """The evicting Redis of the caches (the broker's own when no separate one is configured)."""
        if self.settings.cache_url == self.settings.redis_url:
            return self.redis
        return redis.Redis.from_url(self.settings.cache_url, socket_connect_timeout=2, socket_timeout=10)

    @cached_property
    def prediction_cache(self) -> PredictionCache:
        return PredictionCache(self.cache_redis, self.counters, self.settings.prediction_cache_ttl_s)

    @cached_property
    def store(self) -> Any:
        from ml.features.store import FeatureStore

        s = self.settings
        return FeatureStore(
            s.var_path, s.feast_connection_string, window=s.window, max_age_days=s.feature_max_age_days
        )

    @cached_property
    def source(self) -> Any:
        from ml.data import make_source

        return make_source(self.settings.data_source, self.settings.var_path)

    @cached_property
    def registry(self) -> Any:
        from ml.registry.mlflow_registry import ModelRegistry

        return ModelRegistry(self.settings.tracking_uri, self.settings.artifact_root)

    @cached_property
    def models(self) -> ModelCache:
        s = self.settings
        return ModelCache(
            self.registry, s.model_cache_size, s.model_alias_check_s, self.counters, self.evaluation_stamp
        )

    def evaluation_stamp(self) -> str | None:
        raw = self.redis.get(EVALUATED_KEY)
        return None if raw is None else raw.decode()

    def evaluated(self, run_id: str) -> None:
        """A new evaluation was recorded: every process serves its calibration and verdict from its next
        forecast on (this one at once, the others within `model_alias_check_s`)."""
        self.redis.set(EVALUATED_KEY, run_id)
        self.models.forget_models()

    @cached_property
    def analyst(self) -> Any:
        from agent.service import AnalystService

        return AnalystService(
            agent_config(self.settings),
            store=self.store,
            registry=self.registry,
            get_model=self.models.get,
        )

    # -- operations the tasks share --------------------------------------------------------------
    def ingest(self, tickers: list[str], on_ticker: Any = None) -> dict[str, Any]:
        from ml.features.pipeline import ingest

        return ingest(tickers, source=self.source, store=self.store, on_ticker=on_ticker)

    def serving_model(self, ticker: str, model: str) -> str:
        """The registered model a prediction uses. `auto` means the ticker's child: a ticker without one
        raises ModelNotFound, which the predict task answers by auto-training it (^GSPC: the parent)."""
        from ml.tickers import PARENT_NAME, child_name

        name = PARENT_NAME if model == "parent" or ticker == INDEX_TICKER else child_name(ticker)
        if self.models.champion_version(name) is None:
            raise ModelNotFound(f"no trained model {name} for {ticker}: train it first")
        return name

    def has_model(self, ticker: str, model: str) -> bool:
        try:
            self.serving_model(ticker, model)
        except ModelNotFound:
            return False
        return True

    def forecast(self, ticker: str, model: str = "auto") -> dict[str, Any]:
        """A forecast from the cache when the same model version already saw the same data day."""
        from ml.serving.predict import predict

        ticker = validate_ticker(ticker)
        name = self.serving_model(ticker, model)
        version = self.models.champion_version(name) or ""
        as_of = self.store.online_window(ticker).as_of.isoformat()
        evaluation = self.models.evaluation()
        key = PredictionCache.key(ticker, name, version, as_of, evaluation)
        cached = self.prediction_cache.get(key)
        if cached is not None and "recent_closes" in cached:  # one cached before closes were served: a miss
            return {**cached, "cached": True}
        result = predict(
            ticker, _choice(name), store=self.store, registry=self.registry, get_model=self.models.get
        )
        used = result["model"]
        stored = PredictionCache.key(ticker, used["name"], str(used["version"]), result["as_of"], evaluation)
        self.prediction_cache.put(stored, result)
        return {**result, "cached": False}

    def trained(self, ticker: str, name: str, version: str) -> dict[str, Any]:
        """What a training's result adds about the version it registered, champion or not: its own
        forecast, the closes the chart draws it after, and whether it is the champion now (another training
        may have passed it since its decision). The version is loaded from the registry, not kept warm, and
        the serving cache is left alone: a training is not a request for a forecast."""
        from ml.serving.predict import predict, recent_closes

        champion = self.registry.champion_version(name) == version

        def get(wanted: str) -> Any:
            return self.registry.load(name, version) if wanted == name else None

        try:
            forecast = predict(ticker, _choice(name), store=self.store, registry=self.registry, get_model=get)
        except StockqError as exc:  # the version is registered: its training did not fail
            log.warning("no forecast for %s v%s of %s: %s", name, version, ticker, exc.message)
            closes = recent_closes(self.store, ticker)
            return {"forecast": None, "forecast_error": exc.to_dict(), "recent_closes": closes,
                    "champion": champion}  # fmt: skip
        closes = forecast.pop("recent_closes")  # once, beside the forecast, not inside it as well
        return {"forecast": {**forecast, "cached": False}, "recent_closes": closes, "champion": champion}


def _choice(name: str) -> str:
    """The predict choice that serves model `name`."""
    from ml.tickers import PARENT_NAME

    return "parent" if name == PARENT_NAME else "child"


def agent_config(settings: Settings) -> Any:
    """The analyst's configuration (agent.configuration.AgentConfig) from the settings read at this edge."""
    from agent.configuration import AgentConfig

    return AgentConfig(
        var_dir=settings.var_path,
        llm_model=settings.llm_model,
        openai_api_key=settings.openai_api_key,
        openai_base_url=settings.openai_base_url,
        llm_timeout_s=settings.llm_timeout_s,
        llm_max_retries=settings.llm_max_retries,
        llm_fallback=settings.agent_llm_fallback,
        cache_ttl_s=settings.agent_cache_ttl,
        cache_threshold=settings.agent_cache_threshold,
        qdrant_url=settings.qdrant_url,
    )


_runtime: Runtime | None = None


def get_runtime(settings: Settings) -> Runtime:
    global _runtime
    if _runtime is None or _runtime.settings is not settings:
        _runtime = Runtime(settings)
    return _runtime


def reset_runtime() -> None:
    """Drop per-process state (called in each freshly forked worker process)."""
    global _runtime
    _runtime = None
