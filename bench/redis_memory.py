"""Redis memory (INFO memory used_memory, on a redis-server of its own) after 10,000 chart requests and
10,000 pings: records written the way the job registry writes them now (chart bytes under a short-TTL key
beside the record, ping and chart records kept minutes) against the old shape (the image base64-encoded
inside the record's result, every record kept 7 days), reproduced with a pipeline.

`python -m bench.redis_memory [N]`: a table on stdout, JSON under var/bench/."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import pandas as pd
import redis

from bench.common import free_port, report
from ml.data.bundled import BundledSource
from ml.serving.chart import forecast_chart
from workers.jobs import JobRegistry, keys

OLD_RETENTION_S = 7 * 24 * 3600
SHORT_S = 15 * 60  # Settings.short_job_retention_s: ping and chart records, and the chart bytes


def sample_chart() -> tuple[bytes, dict[str, Any]]:
    """One real PNG of the size the chart task renders, from bundled AAPL closes."""
    closes = BundledSource().fetch("AAPL")["close"]
    last = float(closes.iloc[-1])
    dates = pd.bdate_range(closes.index[-1] + pd.Timedelta(days=1), periods=7)
    forecast = {
        "ticker": "AAPL", "as_of": f"{closes.index[-1]:%Y-%m-%d}", "last_close": last,
        "model": {"name": "stockq-child-AAPL", "version": "3", "kind": "child", "strategy": "fine_tune"},
        "forecast": [{"day": d, "date": f"{t:%Y-%m-%d}", "p10": last * (1 - 0.012 * d),
                      "p50": last * (1 + 0.002 * d), "p90": last * (1 + 0.014 * d)}
                     for d, t in enumerate(dates, start=1)],
    }  # fmt: skip
    image = forecast_chart(closes, forecast, "png")
    result = {"mimetype": "image/png", "bytes": len(image), "as_of": forecast["as_of"]}
    result["model"] = forecast["model"]
    return image, result


def write_now(client: redis.Redis, n: int, image: bytes, result: dict[str, Any]) -> None:
    jobs = JobRegistry(client, OLD_RETENTION_S)
    for _ in range(n):
        chart = jobs.create("chart", {"ticker": "AAPL", "fmt": "png"}, "chart", retention_s=SHORT_S)
        client.set(keys.chart(chart.id), image, ex=SHORT_S)
        jobs.succeed(chart.id, result)
        ping = jobs.create("ping", {}, "ping", retention_s=SHORT_S)
        jobs.succeed(ping.id, {"pong": True})


def write_old(client: redis.Redis, n: int, image: bytes, result: dict[str, Any]) -> None:
    """The old record: the whole image in base64 inside `result`, 7 days for every type."""
    old_result = json.dumps({**result, "image_base64": base64.b64encode(image).decode()})
    ping_result = json.dumps({"pong": True})
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for i in range(2 * n):
        job_id = JobRegistry.new_id()
        chart = i % 2 == 0
        record = {
            "id": job_id, "type": "chart" if chart else "ping", "owner": "anonymous", "status": "succeeded",
            "stage": "", "params": json.dumps({"ticker": "AAPL", "fmt": "png"} if chart else {}),
            "progress": "{}", "submitted_at": repr(now), "started_at": repr(now), "finished_at": repr(now),
            "attempt": "1", "lost": "0", "attempts": "[]", "task": "chart" if chart else "ping",
            "task_args": "[]", "task_kwargs": "{}", "result": old_result if chart else ping_result,
        }  # fmt: skip
        pipe.hset(f"stockq:job:{job_id}", mapping=record)
        pipe.expire(f"stockq:job:{job_id}", OLD_RETENTION_S)
        pipe.zadd("stockq:jobs", {job_id: now})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def main(n: int = 10_000) -> None:
    image, result = sample_chart()
    server = shutil.which("redis-server") or "redis-server"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)  # fmt: skip
        client = redis.Redis(port=port)
        try:
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            rows = []
            for name, write in (("before: base64 in the record, 7 days", write_old), ("now", write_now)):
                client.flushall()
                base = used(client)
                write(client, n, image, result)
                rows.append({"layout": name, "MiB": round((used(client) - base) / 2**20, 1),
                             "keys": client.dbsize()})  # fmt: skip
            # Fast-forward the short retention: every key with a TTL expires now (what 15 minutes would do).
            for key in list(client.scan_iter(count=1000)):
                if client.ttl(key) > 0:
                    client.pexpire(key, 1)
            time.sleep(0.5)
            for key in list(client.scan_iter(count=1000)):  # touching a key expires it if due
                client.exists(key)
            rows.append({"layout": "now, 15 minutes later", "MiB": round((used(client) - base) / 2**20, 1),
                         "keys": client.dbsize()})  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(10)
    report("redis_memory", rows, {"charts": n, "pings": n, "png_bytes": len(image)})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
