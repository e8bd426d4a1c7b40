"""Feature-layer benchmark (not a test): ingest, online reads and the training frame, on real Redis and Feast.

- ingest of all 21 bundled tickers into an empty var dir (fetch, features, offline write, online write),
  then again (everything cached and unchanged: the idempotent path);
- FeatureStore.online_window p50/p99 over --reads reads, against a raw Redis GET of the same bytes (the
  model_window fields of the ticker's hash, copied under one key) and a raw HMGET of those fields;
- FeatureStore.training_frame for one ticker's full history (Feast point-in-time join over duckdb).

    python bench/features.py                  # ~20 s on 2 cores
    python bench/features.py --reads 200 --ticker MSFT

Uses a temporary var dir and flushes Redis DB --feast-db (default 3, the data tests' DB) before and after.
Writes var/bench/features.json (under STOCKQ_VAR_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

from ml.data import make_source
from ml.data.bundled import bundled_tickers
from ml.feature_defs import WINDOW_VIEW
from ml.feature_store import WINDOW_FIELDS, FeatureStore
from ml.pipeline import ingest
from ml.settings import Settings, configure_process_env


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ticker", default="AAPL", help="ticker for the read benchmarks")
    p.add_argument("--reads", type=int, default=1000, help="online reads per measured series")
    p.add_argument("--frames", type=int, default=5, help="training_frame repetitions")
    p.add_argument("--feast-db", type=int, default=3, help="Redis DB for the online store (flushed)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default var/bench/features.json)")
    return p.parse_args()


def latencies_ms(call: Callable[[], Any], n: int) -> list[float]:
    call()  # warm-up: registry load, connection
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def window_row_fields(client: redis.Redis, ticker: str) -> tuple[bytes, list[bytes]]:
    """The Redis key of a ticker's online row and the hash fields online_window reads (Feast's layout)."""
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = _redis_key("stockq", EntityKey(join_keys=["ticker"], entity_values=[Value(string_val=ticker)]), 3)
    fields = [_mmh3(f"{WINDOW_VIEW}:{f}") for f in WINDOW_FIELDS] + [f"_ts:{WINDOW_VIEW}".encode()]
    assert client.exists(key), f"no online row for {ticker}"
    return key, fields


def main() -> None:
    args = parse_args()
    env = Settings()
    configure_process_env(env)
    # ibis (under Feast's duckdb store) warns about its duckdb call on every join, burying the table.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\.")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(var_dir=Path(tmp), redis_url=env.redis_url, feast_redis_db=args.feast_db)
        client = redis.Redis.from_url(settings.feast_redis_url)
        client.flushdb()
        store = FeatureStore(settings.var_path, settings.feast_connection_string, window=settings.window)
        tickers = bundled_tickers()

        start = time.perf_counter()
        cold = ingest(tickers, source=make_source("bundled", settings.var_path), store=store)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = ingest(tickers, source=make_source("bundled", settings.var_path), store=store)
        warm_s = time.perf_counter() - start
        assert not any(r["changed"] for r in warm.values())

        key, fields = window_row_fields(client, args.ticker)
        payload = b"".join(client.hmget(key, fields))
        client.set("bench:raw", payload)
        online = latencies_ms(lambda: store.online_window(args.ticker), args.reads)
        raw_get = latencies_ms(lambda: client.get("bench:raw"), args.reads)
        raw_hmget = latencies_ms(lambda: client.hmget(key, fields), args.reads)

        frame_s = [t / 1000 for t in latencies_ms(lambda: store.training_frame(args.ticker), args.frames)]
        rows = len(store.training_frame(args.ticker))
        client.flushdb()

    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "ingest": {
            "tickers": len(tickers),
            "rows": sum(int(r["rows"]) for r in cold.values()),  # type: ignore[call-overload]
            "cold_s": cold_s,
            "warm_s": warm_s,
        },
        "online_window": {
            "ticker": args.ticker,
            "bytes": len(payload),
            "feast": summary(online),
            "raw_get": summary(raw_get),
            "raw_hmget": summary(raw_hmget),
            "ratio_p50_vs_get": statistics.median(online) / statistics.median(raw_get),
            "ratio_p99_vs_get": summary(online)["p99_ms"] / summary(raw_get)["p99_ms"],
        },
        "training_frame": {
            "ticker": args.ticker,
            "rows": rows,
            "median_s": statistics.median(frame_s),
            "runs": frame_s,
        },
    }

    ow, ing, tf = report["online_window"], report["ingest"], report["training_frame"]
    machine = report["machine"]
    print(f"\nfeature layer ({machine['cpus']} CPUs, load {machine['load_avg_1m']:.2f})")
    lines = [
        ("ingest, 21 bundled tickers, empty var dir", f"{ing['cold_s']:.2f} s"),
        ("ingest again (cached, unchanged)", f"{ing['warm_s']:.2f} s"),
    ]
    for name, label in (
        ("feast", "online_window"),
        ("raw_get", "raw GET, same bytes"),
        ("raw_hmget", "raw HMGET"),
    ):
        lines.append((f"{label}, p50 / p99", f"{ow[name]['p50_ms']:.3f} / {ow[name]['p99_ms']:.3f} ms"))
    lines.append(
        (
            "online_window / raw GET, p50 / p99",
            f"{ow['ratio_p50_vs_get']:.1f}x / {ow['ratio_p99_vs_get']:.1f}x",
        )
    )
    lines.append((f"training_frame, {tf['rows']} rows, median", f"{tf['median_s']:.3f} s"))
    print(f"{'measure (' + args.ticker + ', ' + str(ow['bytes']) + ' B online row)':<46} {'value':>24}")
    for label, value in lines:
        print(f"{label:<46} {value:>24}")
    out = args.out or env.var_path / "bench" / "features.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
