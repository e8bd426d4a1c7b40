"""Queue benchmark: submit throughput through gunicorn vs a raw apply_async loop (same run), and the
round trip of a trivial job through the API (POST /jobs/ping?wait=5)."""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import redis
import requests

from bench.common import local_stack, report, summary_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submits", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pings", type=int, default=300)
    args = parser.parse_args()

    # the per-client rate limit would cap one benchmark client: measured without it
    with local_stack("queue", 8, STOCKQ_RATE_LIMIT="") as env:
        base, settings = env["base"], env["settings"]
        session = requests.Session()
        pings = []
        for _ in range(args.pings):
            started = time.perf_counter()
            r = session.post(f"{base}/jobs/ping?wait=5", timeout=10)
            pings.append(time.perf_counter() - started)
            assert r.status_code == 200 and r.json()["result"] == {"pong": True}, r.text

        # Submissions are measured with the workers stopped, so only the API and the broker are timed.
        env["stack"].stop(names=[n for n in env["stack"].procs if n.startswith("worker-")])
        bodies = [{"ticker": t} for t in ("AAPL", "MSFT", "KO", "PEP")]

        def submit(i: int) -> float:
            s = sessions[i % args.clients]
            started = time.perf_counter()
            r = s.post(f"{base}/predict-child", json=bodies[i % len(bodies)], timeout=10)
            assert r.status_code == 202, r.text
            return time.perf_counter() - started

        sessions = [requests.Session() for _ in range(args.clients)]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            latencies = list(pool.map(submit, range(args.submits)))
        api_rate = args.submits / (time.perf_counter() - started)

        from workers.celery_app import create_celery

        celery = create_celery(settings)
        started = time.perf_counter()
        for i in range(args.submits):
            celery.send_task("stockq.predict", args=[f"raw{i}"], kwargs=bodies[i % len(bodies)])
        raw_rate = args.submits / (time.perf_counter() - started)
        redis.Redis.from_url(settings.redis_url).delete("inference")

    rows = [
        {"measure": "POST /predict-child (gunicorn, 2 workers)", "per_s": api_rate, **summary_ms(latencies)},
        {"measure": "raw send_task loop (1 thread)", "per_s": raw_rate},
        {"measure": "ping round trip (POST ?wait=5)", "per_s": len(pings) / sum(pings), **summary_ms(pings)},
    ]
    report("queue", rows, {"api_vs_raw_submit_ratio": api_rate / raw_rate, "clients": args.clients})


if __name__ == "__main__":
    main()
