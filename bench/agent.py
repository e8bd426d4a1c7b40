"""Analyst benchmark (not a test): how much a semantic-cache hit saves over a full analyst run.

Sets up bundled AAPL/MSFT/^GSPC features (Feast online store on Redis DB --feast-db), trains a one-epoch
parent (the benchmark times the analyst, not the model), then times AnalystService.analyze end to end:

- full run: forecast, cache lookup (miss), news, model card, the four-specialist graph, cache store;
- cache hit: forecast, question embedding, Qdrant lookup.

Models come through the workers' ModelCache, as in the agent worker, so neither path reloads weights.

for the deterministic analyst and for the LLM analyst against the scripted OpenAI-compatible server on
loopback (agent.fakellm), optionally with an artificial per-call latency standing in for a hosted model.

    python bench/agent.py                            # ~1 minute on 2 CPU cores
    python bench/agent.py --runs 50 --llm-delays 0,0.5

Writes var/bench/agent.json (under STOCKQ_VAR_DIR).
"""

# ruff: noqa: E402  (the path fix below must run before the first `agent` import)
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

# Run as a script, this file's folder leads sys.path and this very file, agent.py, would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import redis
import torch

from agent.configuration import AgentConfig
from agent.embeddings import embed
from agent.fakellm import FakeOpenAI, Reply, canned_analyst
from agent.service import AnalystService
from ml.data import make_source
from ml.feature_store import FeatureStore
from ml.pipeline import ingest
from ml.registry import ModelRegistry
from ml.settings import Settings, configure_process_env
from ml.train import TrainConfig, train_parent
from workers.model_cache import ModelCache

QUESTION = "What is the 7-day forecast for {ticker}?"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ticker", default="AAPL", help="a bundled ticker")
    p.add_argument("--runs", type=int, default=20, help="timed runs per mode and path")
    p.add_argument(
        "--llm-delays",
        default="0,0.25",
        help="comma-separated seconds the fake LLM waits per call (0 = the client and graph overhead alone)",
    )
    p.add_argument("--feast-db", type=int, default=7, help="Redis DB for the benchmark's online store")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default var/bench/agent.json)")
    return p.parse_args()


def setup(root: Path, feast_db: int, ticker: str) -> tuple[Settings, FeatureStore, ModelRegistry]:
    settings = Settings(
        var_dir=root,
        data_source="bundled",
        feast_redis_db=feast_db,
        mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        openai_api_key=None,
        openai_base_url=None,
        qdrant_url=None,
    )
    redis.Redis.from_url(settings.feast_redis_url).flushdb()
    store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
    ingest(sorted({"^GSPC", ticker}), source=make_source("bundled", settings.var_path), store=store)
    registry = ModelRegistry(settings.tracking_uri, settings.artifact_root)
    config = TrainConfig(epochs=1, hidden=8, layers=1, history_days=3 * 365, device="cpu")
    train_parent(store=store, registry=registry, config=config)
    return settings, store, registry


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
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - start) * 1000)
        if result["cached"] is not cached:
            raise RuntimeError(f"expected cached={cached}, got {result['cached']}: nothing to measure")
    return times


def summary(times: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(times, n=10)
    return {"p50_ms": statistics.median(times), "p90_ms": cuts[-1], "min_ms": min(times)}


def bench_mode(
    base: AgentConfig,
    store: FeatureStore,
    registry: ModelRegistry,
    ticker: str,
    runs: int,
    delay: float | None,
) -> dict[str, Any]:
    question = QUESTION.format(ticker=ticker)
    with llm_server(delay) as server, tempfile.TemporaryDirectory() as tmp:
        config = base
        if server is not None:
            config = replace(config, llm_model="fake-analyst", openai_api_key="bench")
            config = replace(config, openai_base_url=server.base_url)
        # ttl 0: every entry is expired (and purged) by the next lookup, so each full run is a real miss.
        miss_config = replace(config, var_dir=Path(tmp, "miss"), cache_ttl_s=0)
        # The worker's model cache, as in production: a hit should not pay for loading weights.
        get_model = ModelCache(registry).get
        misses = AnalystService(miss_config, store=store, registry=registry, get_model=get_model)
        hit_config = replace(config, var_dir=Path(tmp, "hit"))
        hits = AnalystService(hit_config, store=store, registry=registry, get_model=get_model)
        try:
            hits.analyze(ticker, question)  # warm: predict's model load, the first Qdrant open
            full = timed(lambda: misses.analyze(ticker, question), runs, cached=False)
            hit = timed(lambda: hits.analyze(ticker, question), runs, cached=True)
        finally:
            misses.close()
            hits.close()
    return {
        "mode": "deterministic" if delay is None else f"fake LLM, {delay * 1000:.0f} ms/call",
        "full_run": summary(full),
        "cache_hit": summary(hit),
        "speedup_p50": statistics.median(full) / statistics.median(hit),
    }


def main() -> None:
    args = parse_args()
    env = Settings()
    configure_process_env(env)
    torch.set_num_threads(env.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        settings, store, registry = setup(Path(tmp), args.feast_db, args.ticker)
        start = time.perf_counter()
        embed("load the model")
        load_s = time.perf_counter() - start
        base = AgentConfig.from_settings(settings)
        delays: list[float | None] = [None, *(float(d) for d in args.llm_delays.split(",") if d.strip())]
        rows = [bench_mode(base, store, registry, args.ticker, args.runs, d) for d in delays]
        redis.Redis.from_url(settings.feast_redis_url).flushdb()

    print(f"\nanalyze({args.ticker!r}): {args.runs} runs per cell, embedder load {load_s:.1f} s")
    print(f"{'mode':<26} {'full run p50':>13} {'p90':>9} {'cache hit p50':>14} {'p90':>9} {'speed-up':>9}")
    for row in rows:
        full, hit = row["full_run"], row["cache_hit"]
        print(
            f"{row['mode']:<26} {full['p50_ms']:>10.1f} ms {full['p90_ms']:>6.1f} ms "
            f"{hit['p50_ms']:>11.1f} ms {hit['p90_ms']:>6.1f} ms {row['speedup_p50']:>8.1f}x"
        )
    out = args.out or env.var_path / "bench" / "agent.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "ticker": args.ticker,
        "runs": args.runs,
        "embedder_load_s": load_s,
        "torch_threads": env.torch_threads,
        "rows": rows,
    }
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
