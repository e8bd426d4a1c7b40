"""Feature-layer benchmark (not a test): ingest, online reads and the training frame, on real Redis and Feast.

- ingest of all 21 bundled tickers into an empty var dir (fetch, features, offline write, online write),
  then again (everything cached and unchanged: the idempotent path);
- FeatureStore.online_window p50/p99 over --reads reads, against a raw Redis GET of the same bytes (the
  model_window fields of the ticker's hash, copied under one key) and a raw HMGET of those fields;
- FeatureStore.training_frame for one ticker's full history (Feast point-in-time join over duckdb).

    python -m bench.features                  # ~20 s on 2 cores
    python -m bench.features --reads 200 --ticker MSFT

Uses a temporary var dir and flushes Redis DB --feast-db (default 3, the data tests' DB) before and after.
Writes var/bench/features.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.common import report, summary_ms
from ml.data import make_source
from ml.data.bundled import bundled_tickers
from ml.features.definitions import WINDOW_VIEW
from ml.features.pipeline import ingest
from ml.features.store import WINDOW_FIELDS, FeatureStore
from stockq.settings import Settings, configure_process_env


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ticker", default="AAPL", help="ticker for the read benchmarks")
    p.add_argument("--reads", type=int, default=1000, help="online reads per measured series")
    p.add_argument("--frames", type=int, default=5, help="training_frame repetitions")
    p.add_argument("--feast-db", type=int, default=3, help="Redis DB for the online store (flushed)")
    return p.parse_args()


def timed(call: Callable[[], Any], n: int) -> list[float]:
    """Seconds per call, after one untimed warm-up call (registry load, connection)."""
    call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def window_row_fields(client: redis.Redis, ticker: str) -> tuple[bytes, list[bytes]]:
    """The Redis key of a ticker's online row and the hash fields online_window reads (Feast's layout)."""
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = _redis_key("stockq", EntityKey(join_keys=["ticker"], entity_values=[Value(string_val=ticker)]), 3)
    fields = [_mmh3(f"{WINDOW_VIEW}:{f}") for f in WINDOW_FIELDS] + [f"_ts:{WINDOW_VIEW}".encode()]
    if not client.exists(key):
        raise SystemExit(f"no online row for {ticker}")
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
        if any(r["changed"] for r in warm.values()):
            raise SystemExit("the second ingest changed stored features: ingest is not idempotent")

        key, fields = window_row_fields(client, args.ticker)
        payload = b"".join(client.hmget(key, fields))  # type: ignore[arg-type]
        client.set("bench:raw", payload)
        online = summary_ms(timed(lambda: store.online_window(args.ticker), args.reads))
        raw_get = summary_ms(timed(lambda: client.get("bench:raw"), args.reads))
        raw_hmget = summary_ms(timed(lambda: client.hmget(key, fields), args.reads))
        frame = summary_ms(timed(lambda: store.training_frame(args.ticker), args.frames))
        client.flushdb()

    rows = [
        {"measure": f"ingest {len(tickers)} bundled tickers, empty var dir", "seconds": cold_s},
        {"measure": "ingest again (cached, unchanged)", "seconds": warm_s},
        {"measure": f"online_window({args.ticker})", **online},
        {"measure": f"raw GET of the same {len(payload)} bytes", **raw_get},
        {"measure": "raw HMGET of the row's fields", **raw_hmget},
        {"measure": f"training_frame({args.ticker}), {cold[args.ticker]['rows']} rows", **frame},
    ]
    report(
        "features",
        rows,
        {
            "online_window_over_raw_get_p50": online["p50_ms"] / raw_get["p50_ms"],
            "online_window_over_raw_get_p99": online["p99_ms"] / raw_get["p99_ms"],
            "rows_ingested": sum(int(str(r["rows"])) for r in cold.values()),
        },
    )


if __name__ == "__main__":
    main()
