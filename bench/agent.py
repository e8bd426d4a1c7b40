"""Analyst benchmark (not a test): how much a semantic-cache hit saves over a full analyst run.

Sets up bundled features for --ticker and ^GSPC and trains a one-epoch parent (the benchmark times the
analyst, not the model), then times AnalystService.analyze end to end:

- full run: forecast, cache lookup (a miss), news, model card, the four-specialist graph, cache store;
- cache hit: forecast, question embedding, Qdrant lookup;

for the deterministic analyst and for the LLM analyst against the scripted OpenAI-compatible server on
loopback (tests.fakellm), with an optional per-call latency standing in for a hosted model. Models come
through the workers' ModelCache, as in the agent worker, so neither path reloads weights.

    python -m bench.agent                        # ~1 minute on 2 cores
    python -m bench.agent --runs 50 --llm-delays 0,0.5

Uses a temporary var dir and flushes Redis DB --feast-db (default 7, the agent tests' DB) before and after.
Writes var/bench/agent.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
import torch
from pydantic import SecretStr

from agent.configuration import AgentConfig
from agent.embeddings import embed
from agent.service import AnalystService
from bench.common import report, summary_ms
from ml.config import PanelModelConfig
from ml.data import make_source
from ml.features.pipeline import ingest
from ml.features.store import FeatureStore
from ml.registry.mlflow_registry import ModelRegistry
from ml.training.train import TrainConfig, train_parent
from stockq.settings import Settings, configure_process_env
from tests.fakellm import FakeOpenAI, Reply, canned_analyst
from workers.model_cache import ModelCache
from workers.runtime import agent_config

QUESTION = "What is the 7-day forecast for {ticker}?"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ticker", default="AAPL", help="a bundled ticker")
    p.add_argument("--runs", type=int, default=20, help="timed runs per mode and path")
    p.add_argument(
        "--llm-delays",
        default="0,0.25",
        help="comma-separated seconds the fake LLM waits per call (0: client and graph overhead alone)",
    )
    p.add_argument("--feast-db", type=int, default=7, help="Redis DB for the online store (flushed)")
    return p.parse_args()


@contextmanager
def llm_server(delay_s: float | None) -> Iterator[FakeOpenAI | None]:
    if delay_s is None:
        yield None
        return

    def slow(role: str, body: dict[str, Any]) -> Reply:
        time.sleep(delay_s)
        return canned_analyst(role, body)

    with FakeOpenAI(slow) as server:
        yield server


def timed(call: Callable[[], dict[str, Any]], runs: int, cached: bool) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - start)
        if result["cached"] is not cached:
            raise SystemExit(f"expected cached={cached}, got {result['cached']}: nothing to measure")
    return samples


def bench_mode(
    base: AgentConfig,
    store: FeatureStore,
    registry: ModelRegistry,
    ticker: str,
    runs: int,
    delay: float | None,
) -> dict[str, Any]:
    question = QUESTION.format(ticker=ticker)
    get_model = ModelCache(registry).get
    with llm_server(delay) as server, tempfile.TemporaryDirectory() as tmp:
        config = base
        if server is not None:
            config = replace(config, llm_model="fake-analyst", openai_api_key=SecretStr("bench"))
            config = replace(config, openai_base_url=server.base_url)
        # ttl 0: every entry has expired (and is purged) by the next lookup, so each full run is a miss.
        miss_config = replace(config, var_dir=Path(tmp, "miss"), cache_ttl_s=0)
        misses = AnalystService(miss_config, store=store, registry=registry, get_model=get_model)
        hit_config = replace(config, var_dir=Path(tmp, "hit"))
        hits = AnalystService(hit_config, store=store, registry=registry, get_model=get_model)
        try:
            hits.analyze(ticker, question)  # warm: the model's first load, the first Qdrant open
            full = timed(lambda: misses.analyze(ticker, question), runs, cached=False)
            hit = timed(lambda: hits.analyze(ticker, question), runs, cached=True)
        finally:
            misses.close()
            hits.close()
    full_ms, hit_ms = summary_ms(full), summary_ms(hit)
    return {
        "analyst": "deterministic" if delay is None else f"fake LLM {delay * 1000:.0f}ms",
        "full_p50_ms": full_ms["p50_ms"],
        "full_p99_ms": full_ms["p99_ms"],
        "hit_p50_ms": hit_ms["p50_ms"],
        "hit_p99_ms": hit_ms["p99_ms"],
        "speedup": statistics.median(full) / statistics.median(hit),
    }


def main() -> None:
    args = parse_args()
    env = Settings()
    configure_process_env(env)
    torch.set_num_threads(env.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(
            var_dir=root,
            redis_url=env.redis_url,
            feast_redis_db=args.feast_db,
            data_source="bundled",
            mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            openai_api_key=None,
            openai_base_url=None,
            qdrant_url=None,
        )
        client = redis.Redis.from_url(settings.feast_redis_url)
        client.flushdb()
        store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
        ingest(sorted({"^GSPC", args.ticker}), source=make_source("bundled", settings.var_path), store=store)
        registry = ModelRegistry(settings.tracking_uri, settings.artifact_root)
        parent = TrainConfig(model=PanelModelConfig(epochs=1, hidden=8, layers=1, device="cpu"))
        train_parent(store=store, registry=registry, config=parent)

        start = time.perf_counter()
        embed("load the model")
        load_s = time.perf_counter() - start
        base = agent_config(settings)
        delays: list[float | None] = [None, *(float(d) for d in args.llm_delays.split(",") if d.strip())]
        rows = [bench_mode(base, store, registry, args.ticker, args.runs, d) for d in delays]
        client.flushdb()

    report(
        "agent",
        rows,
        {
            "call": f"AnalystService.analyze({args.ticker!r}, {QUESTION.format(ticker=args.ticker)!r})",
            "runs_per_cell": args.runs,
            "embedder_load_s": round(load_s, 2),
            "torch_threads": env.torch_threads,
        },
    )


if __name__ == "__main__":
    main()
