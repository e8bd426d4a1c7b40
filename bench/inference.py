"""Inference benchmark: warm end-to-end `POST /predict-child?wait=5` through gunicorn (p50/p99, req/s)
against the in-process `ml.serving.predict` call (the floor) in the same run; a 20-ticker batch job vs 20
single jobs."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import local_stack, report, run_job, summary_ms

TICKERS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
           "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    fast = {"STOCKQ_TRAIN_HISTORY_DAYS": "700", "STOCKQ_DEFAULT_EPOCHS": "2"}
    with local_stack("inference", 6, **fast) as env:
        base, settings = env["base"], env["settings"]
        s = requests.Session()
        run_job(s, base, "/ingest", {"tickers": ["^GSPC", *TICKERS]})
        run_job(s, base, "/train", {"ticker": "^GSPC", "epochs": 2})
        run_job(s, base, "/train", {"ticker": "AAPL", "epochs": 2})

        from ml.serving.predict import predict
        from workers.runtime import Runtime

        rt = Runtime(settings)
        floor = []
        for _ in range(args.requests):
            started = time.perf_counter()
            predict("AAPL", "child", store=rt.store, registry=rt.registry, get_model=rt.models.get)
            floor.append(time.perf_counter() - started)

        slow: list[float] = []

        def warm(session: requests.Session) -> float:
            """One warm request; one that outlives `wait` is followed to the end and counted."""
            started = time.perf_counter()
            r = session.post(f"{base}/predict-child?wait=5", json={"ticker": "AAPL"}, timeout=10)
            if r.status_code == 202:
                run_job(session, base, f"/status/{r.json()['job_id']}", None, timeout_s=60)
                slow.append(time.perf_counter() - started)
            else:
                assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            return time.perf_counter() - started

        for _ in range(20):  # load the model into every inference process, fill the cache
            run_job(s, base, "/predict-child", {"ticker": "AAPL"}, timeout_s=120)
        serial = [warm(s) for _ in range(args.requests)]
        sessions = [requests.Session() for _ in range(args.clients)]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            parallel = list(pool.map(lambda i: warm(sessions[i % args.clients]), range(args.requests)))
        rate = args.requests / (time.perf_counter() - started)

        started = time.perf_counter()
        batch = s.post(f"{base}/predict?wait=10", json={"tickers": TICKERS}, timeout=30).json()
        batch_s = time.perf_counter() - started
        assert batch["status"] == "succeeded" and len(batch["result"]) == 20, batch
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            singles = list(
                pool.map(
                    lambda t: s.post(
                        f"{base}/predict-child?wait=10", json={"ticker": t, "model": "parent"}, timeout=30
                    ).json(),
                    TICKERS,
                )
            )
        singles_s = time.perf_counter() - started
        assert all(j["status"] == "succeeded" for j in singles)

    floor_p50 = summary_ms(floor)["p50_ms"]
    e2e = summary_ms(serial)
    rows = [
        {"measure": "in-process ml.serving.predict (floor)", **summary_ms(floor)},
        {
            "measure": "warm POST /predict-child?wait=5, 1 client",
            **e2e,
            "req_per_s": len(serial) / sum(serial),
        },
        {"measure": f"same, {args.clients} clients", **summary_ms(parallel), "req_per_s": rate},
        {"measure": "batch of 20 tickers (1 job)", "n": 1, "p50_ms": batch_s * 1000},
        {"measure": "20 single jobs (parallel)", "n": 20, "p50_ms": singles_s * 1000},
    ]
    report(
        "inference",
        rows,
        {
            "e2e_p50_over_floor_p50": e2e["p50_ms"] / floor_p50,
            "target": "warm end-to-end p50 within 10x the in-process call",
            "batch_speedup_vs_singles": singles_s / batch_s,
            "requests_past_the_5s_wait": len(slow),
        },
    )


if __name__ == "__main__":
    main()
