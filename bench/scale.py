"""Scale benchmark (not a test): training throughput with 1 vs 2 training worker processes, predict
throughput of one warm inference process, a capacity model built from the measured jobs, and the submit
and round-trip figures on Redis vs RabbitMQ.

    python -m bench.scale                                  # ~10 min on 2 quiet cores
    python -m bench.scale --children 2 --brokers redis     # quicker

Everything runs for real on a stack of the bench's own (bench/submit.py's `bench_stack`: its own
redis-server as broker and registry, gunicorn, a fresh var dir): Celery workers started like `stockq up`'s
(webapp/stack.worker_argv), one process each (`-c 1`, STOCKQ_TORCH_THREADS=1, BLAS pools at one thread),
jobs submitted through `POST /train` and `POST /predict-child`. Order:

1. ingest (^GSPC and every child ticker), a scratch child to warm worker `train1`, then the parent trained
   once on it (its own figure; its panel is every ingested ticker, or ^GSPC alone with --universe gspc),
   then one fine-tuned child (its own figure);
2. 1 worker: N/2 children submitted at once; wall from the first submit to the last finish;
3. a second worker process `train2` (separate process, concurrency 1), both warmed by one child each,
   then N other children the same way; then `train2` stops and the other N/2 children run on `train1`
   alone (1-2-1, so a drift of the machine's load hits both); the jobs/hour ratio is the scaling;
4. predictions on one warm inference process: latency of `?wait=5` (cache emptied first, and cached),
   and throughput of bursts of uncached and cached predictions;
5. the capacity model (bench/capacity.py: each training's select and refit phases taken apart) at the
   worker settings of this environment (stockq/settings.py) on the data the bench ingested;
6. bench/submit.py's round trips and submit throughput, one round per broker.

Children are distinct bundled tickers (at most 8 per phase). Sizes: flags, or SCALE_<FLAG> in the env.
Prints one table; writes var/bench/scale.json (the table) and var/bench/scale-detail.json (every job).
The load average is recorded next to each figure: on a shared machine the ratio reads low.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import redis
import requests

from bench import capacity, scale_brokers, scale_model
from bench.common import OUT_DIR, advertised_since, console, pct, report
from bench.submit import HIGH_LIMIT, BenchStack, bench_stack

PARENT_TICKER = "^GSPC"
PREDICT_TICKERS = 12  # fewer than STOCKQ_MODEL_CACHE_SIZE (16): every prediction finds its model warm
ONE_THREAD = {"STOCKQ_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}  # fmt: skip


def _env(name: str, default: Any) -> Any:
    return type(default)(os.environ.get(f"SCALE_{name.upper()}", default))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flag = lambda name, default, text: p.add_argument(  # noqa: E731
        f"--{name.replace('_', '-')}", type=type(default), default=_env(name, default), help=text
    )
    flag("children", 6, "child trainings per phase (1 and 2 workers), at most 8")
    flag("history_days", 2000, "STOCKQ_TRAIN_HISTORY_DAYS of the measured children (a parent reads it all)")
    flag("epochs", 3, "STOCKQ_DEFAULT_EPOCHS of the measured trainings (the selection phase's budget)")
    flag("universe", "panel", "STOCKQ_PARENT_UNIVERSE of the measured trainings: panel or gspc")
    flag("predict_samples", 30, "sequential ?wait=5 predictions, uncached and cached")
    flag("predict_rounds", 5, "bursts of one uncached prediction per trained ticker")
    flag("brokers", "redis,amqp", "brokers of the round-trip section (empty: skip it)")
    flag("broker_samples", 100, "round trips of each kind per broker")
    flag("broker_seconds", 5.0, "wrk seconds per submit measurement")
    flag("nightly", "100,500", "tickers of the nightly-retrain sizing")
    flag("window_hours", 6.0, "the nightly retrain's window")
    args = p.parse_args()
    if not 1 <= args.children <= 8:
        p.error("--children must be 1..8 (distinct bundled tickers: 3 warm-ups and 2 phases, of 20)")
    if args.universe not in ("panel", "gspc"):
        p.error("--universe must be panel or gspc")
    return args


class Api:
    """Submit and follow jobs on the bench stack's API with its tenant key."""

    def __init__(self, stack: BenchStack) -> None:
        self.base = stack.stockq
        self.session = requests.Session()
        self.session.headers.update(stack.auth)

    def submit(self, path: str, body: dict[str, Any]) -> str:
        r = self.session.post(self.base + path, json=body, timeout=30)
        if r.status_code != 202:
            raise SystemExit(f"{path} {body} -> {r.status_code}: {r.text[:300]}")
        return r.json()["job_id"]

    def wait(self, ids: list[str], timeout_s: float = 1800) -> list[dict[str, Any]]:
        """The records once every job ended; exits unless all succeeded."""
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(ids) - len(done)} job(s) not finished in {timeout_s}s")
            for job_id in set(ids) - set(done):
                job = self.session.get(f"{self.base}/status/{job_id}", timeout=10).json()
                if job["status"] in {"succeeded", "failed", "cancelled"}:
                    if job["status"] != "succeeded":
                        raise SystemExit(f"job {job_id} {job['status']}: {job.get('error')}")
                    done[job_id] = job
            time.sleep(0.3)
        return [done[i] for i in ids]

    def run(self, path: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.wait([self.submit(path, b) for b in bodies])

    def card(self, job: dict[str, Any]) -> dict[str, Any]:
        result = job["result"]
        r = self.session.get(f"{self.base}/models/{result['name']}", params={"version": result["version"]},
                             timeout=30)  # fmt: skip
        r.raise_for_status()
        return r.json()


def start_worker(stack: BenchStack, name: str, queue: str, env: dict[str, str]) -> None:
    from stockq.cli.stack import worker_argv

    since = time.time()
    proc = stack.spawn(name, [*worker_argv(queue, 1, name), "--without-mingle", "--without-gossip"], **env)
    client = redis.Redis.from_url(stack.redis_url)
    deadline = time.monotonic() + 300
    while not advertised_since(client, queue, name, since):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker {name} did not come up; log: {stack.var / (name + '.log')}")
        time.sleep(0.2)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def drain(api: Api, tickers: list[str]) -> dict[str, Any]:
    """N child trainings submitted at once; wall from the first submit to the last finish."""
    before = load()
    jobs = api.run("/train", [{"ticker": t, "strategy": "fine_tune"} for t in tickers])
    wall = max(j["finished_at"] for j in jobs) - min(j["submitted_at"] for j in jobs)
    per_worker = {w: sum(j["worker"] == w for j in jobs) for w in sorted({j["worker"] for j in jobs})}
    return {"jobs": jobs, "wall_s": wall, "jobs_per_h": len(jobs) * 3600 / wall, "load_1m": [before, load()],
            "per_worker": per_worker}  # fmt: skip


def _merge(halves: list[dict[str, Any]]) -> dict[str, Any]:
    jobs = [j for h in halves for j in h["jobs"]]
    wall = sum(h["wall_s"] for h in halves)
    return {"jobs": jobs, "wall_s": wall, "jobs_per_h": len(jobs) * 3600 / wall,
            "load_1m": [halves[0]["load_1m"][0], halves[-1]["load_1m"][1]], "halves": halves}  # fmt: skip


def training(api: Api, stack: BenchStack, tickers: list[str], n: int, env: dict[str, str]) -> dict[str, Any]:
    """Parent, first child, then 1 worker / 2 workers / 1 worker (half the 1-worker children before the
    2-worker phase and half after, so a drift of the machine's load hits both alike)."""
    timeline: dict[str, float] = {}

    def mark(label: str, note: str = "") -> None:
        timeline[label] = time.time()
        console.print(f"{time.strftime('%H:%M:%S')} {label} {note} (load {load()})")

    mark("start")
    start_worker(stack, "ingest", "ingest", env)
    api.run("/ingest", [{"tickers": [PARENT_TICKER, *tickers]}])
    stack.stop("ingest")
    start_worker(stack, "train1", "training", env)
    # The process's first job pays its lazy imports (statsmodels, scipy, torch's kernels): a scratch child
    # (it needs no parent) takes them, so the parent's own figure is a warm process's.
    api.run("/train", [{"ticker": tickers[0], "strategy": "scratch"}])
    mark("ingested")
    before = load()
    parent = api.run("/train", [{"ticker": PARENT_TICKER}])[0]
    after_parent = load()
    mark("parent", f"{_wall(parent):.1f} s")
    first_child = api.run("/train", [{"ticker": tickers[0], "strategy": "fine_tune"}])[0]
    mark("first_child", f"{_wall(first_child):.1f} s")
    queue = iter(tickers[1:])
    take = lambda k: [next(queue) for _ in range(k)]  # noqa: E731
    halves = [drain(api, take(n // 2))] if n // 2 else []
    mark("one_a", f"{halves[0]['wall_s']:.1f} s" if halves else "")
    start_worker(stack, "train2", "training", env)
    # Each process trains one child before the timed phase, so neither pays its first job's set-up in it.
    api.run("/train", [{"ticker": t, "strategy": "fine_tune"} for t in take(2)])
    mark("warm_two")
    two = drain(api, take(n))
    mark("two", f"{two['wall_s']:.1f} s")
    stack.stop("train2")
    halves.append(drain(api, take(n - n // 2)))
    mark("one_b", f"{halves[-1]['wall_s']:.1f} s")
    stack.stop("train1")
    return {"parent": parent, "parent_load_1m": [before, after_parent], "first_child": first_child,
            "first_child_load_1m": after_parent, "one": _merge(halves), "two": two,
            "timeline": timeline}  # fmt: skip


def _forget_forecasts(client: redis.Redis, ticker: str = "*") -> None:
    for key in client.scan_iter(f"stockq:pred:{ticker}:*"):
        client.delete(key)


def predictions(api: Api, stack: BenchStack, tickers: list[str], args: argparse.Namespace,
                env: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """One inference process, every model loaded first: `?wait=5` latency, then burst throughput."""
    start_worker(stack, "infer", "inference", env)
    client = redis.Redis.from_url(stack.redis_url)
    body = lambda t: {"ticker": t, "model": "child"}  # noqa: E731
    api.run("/predict-child", [body(t) for t in tickers])  # loads every child into the process's cache
    before = load()
    latency: dict[str, list[float]] = {"uncached": [], "cached": []}
    for i in range(args.predict_samples):
        ticker = tickers[i % len(tickers)]
        _forget_forecasts(client, ticker)
        for kind in ("uncached", "cached"):
            started = time.perf_counter()
            r = api.session.post(f"{api.base}/predict-child?wait=5", json=body(ticker), timeout=30)
            latency[kind].append(time.perf_counter() - started)
            if r.status_code != 200 or r.json()["result"]["cached"] != (kind == "cached"):
                raise SystemExit(f"predict {ticker} ({kind}) answered {r.status_code}: {r.text[:300]}")
    bursts: dict[str, dict[str, float]] = {}
    for kind, rounds in (("uncached", args.predict_rounds), ("cached", args.predict_rounds)):
        walls, service, count = 0.0, [], 0
        for _ in range(rounds):
            if kind == "uncached":
                _forget_forecasts(client)
            jobs = api.run("/predict-child", [body(t) for t in tickers])
            walls += max(j["finished_at"] for j in jobs) - min(j["submitted_at"] for j in jobs)
            service += [j["finished_at"] - j["started_at"] for j in jobs]
            count += len(jobs)
        bursts[kind] = {"jobs": count, "per_s": count / walls, "service_p50_ms": pct(service, 50) * 1000}
    stack.stop("infer")
    return {
        "latency_p50_ms": {k: pct(v, 50) * 1000 for k, v in latency.items()},
        "bursts": bursts,
        "load_1m": [before, load()],
    }


def rows_of(run: dict[str, Any], pred: dict[str, Any], cap: dict[str, Any], brokers: list[dict[str, Any]],
            args: argparse.Namespace) -> list[dict[str, Any]]:  # fmt: skip
    """The table: (section, measure, value, up to, unit, load average at start and end)."""
    m, one, two, n = cap["measured"], run["one"], run["two"], args.children
    lat, bursts, pl = pred["latency_p50_ms"], pred["bursts"], pred["load_1m"]
    table = [
        ("training", "parent training wall (1 worker)", m["parent"].wall, "", "s", run["parent_load_1m"]),
        ("training", "parent epoch in the loop: selection / refit", m["parent"].select_epoch_s,
         _refit_epoch(m["parent"]), "s", ""),
        ("training", "first child after the parent (1 worker)", _wall(run["first_child"]), "", "s",
         run["first_child_load_1m"]),
        ("training", "child training wall, mean (1 worker)", m["child"].wall, "", "s", one["load_1m"]),
        ("training", "child epoch in the loop: selection / refit", m["child"].select_epoch_s,
         _refit_epoch(m["child"]), "s", ""),
        ("training", f"1 worker process: {n} children drained", one["wall_s"], "", "s", one["load_1m"]),
        ("training", "1 worker process", one["jobs_per_h"], "", "jobs/h", one["load_1m"]),
        ("training", f"2 worker processes (-c 1 each): {n} children", two["wall_s"], "", "s", two["load_1m"]),
        ("training", "2 worker processes", two["jobs_per_h"], "", "jobs/h", two["load_1m"]),
        ("training", "2 vs 1 worker processes (target >= 1.8)", two["jobs_per_h"] / one["jobs_per_h"], "",
         "x", two["load_1m"]),
        ("predict", "POST /predict-child?wait=5 p50: uncached / cached", lat["uncached"], lat["cached"], "ms",
         pl),
        ("predict", "uncached predictions per process (bursts)", bursts["uncached"]["per_s"], "", "jobs/s",
         pl),
        ("predict", "cached predictions per process (bursts)", bursts["cached"]["per_s"], "", "jobs/s", pl),
        *scale_model.rows(cap, args),
        ("capacity", "predict jobs/hour per process (uncached, measured)", bursts["uncached"]["per_s"] * 3600,
         "", "jobs/h", pl),
    ]  # fmt: skip
    for b in brokers:
        k = f"broker {b['broker']}"
        if "error" in b:
            table.append((k, "failed", b["error"], "", "", ""))
            continue
        bl = b["load_1m"]
        table += [
            (k, "raw Celery noop round trip p50", b["raw_noop_p50_ms"], "", "ms", bl),
            (k, "POST /jobs/ping?wait=5 p50", b["ping_wait_p50_ms"], "", "ms", bl),
            (k, "warm POST /predict-child?wait=5 p50 / x raw", b["predict_wait_p50_ms"],
             b["predict_wait_over_raw"], "ms", bl),
            (k, "submit req/s: bare Flask peer / POST /predict-child", b["peer_enqueue_per_s"],
             b["stockq_submit_per_s"], "req/s", bl),
            (k, "submit ratio stockq / peer (target >= 0.7)", b["submit_ratio"], "", "x", bl),
            (k, "API CPU per submit: bare Flask peer / stockq", b["peer_enqueue_cpu_us"],
             b["stockq_submit_cpu_us"], "us", bl),
        ]  # fmt: skip
    keys = ("section", "measure", "value", "to", "unit", "load_1m")
    return [dict(zip(keys, r, strict=True)) for r in table]


def _refit_epoch(cost: capacity.JobCost) -> float | str:
    return "no refit" if cost.refit_epoch_s is None else cost.refit_epoch_s


def _wall(job: dict[str, Any]) -> float:
    return job["finished_at"] - job["started_at"]


def main() -> None:
    args = parse_args()
    console.width = max(console.width, 150)  # the table's measures stay on one line
    from ml.data.bundled import bundled_tickers

    # Distinct children: one warm-up, a phase on 1 worker, two warm-ups, a phase on 2 workers.
    tickers = [t for t in bundled_tickers() if t != PARENT_TICKER][: 3 + 2 * args.children]
    env = {**ONE_THREAD, "STOCKQ_TRAIN_HISTORY_DAYS": str(args.history_days),
           "STOCKQ_DEFAULT_EPOCHS": str(args.epochs), "STOCKQ_PARENT_UNIVERSE": args.universe}  # fmt: skip
    started = time.monotonic()
    with bench_stack(name="scale", STOCKQ_RATE_LIMIT_TRAIN=HIGH_LIMIT) as stack:
        api = Api(stack)
        run = training(api, stack, tickers, args.children, env)
        pred = predictions(api, stack, tickers[:PREDICT_TICKERS], args, env)
        cap = scale_model.model(stack, api, run, tickers, args)
    detail = {"config": vars(args), "worker_env": env, "run": run, "predict": pred, "capacity": cap}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / "scale-detail.json"
    path.write_text(json.dumps(detail, indent=1, default=_plain))  # kept even if a broker run fails
    brokers = [scale_brokers.measure_apart(k, args.broker_samples, args.broker_seconds)
               for k in args.brokers.split(",") if k]  # fmt: skip
    rows = rows_of(run, pred, cap, brokers, args)
    path.write_text(json.dumps({**detail, "brokers": brokers, "wall_s": time.monotonic() - started},
                               indent=1, default=_plain))  # fmt: skip
    parent, child, panels = cap["parent"]["target"], cap["child"]["target"], cap["panel_tickers"]
    report("scale", rows, {
        "measured at": f"{args.children} children per phase, {args.history_days} days of child history, "
                       f"{args.epochs} epochs at most, parent universe {args.universe}",
        "modelled at": f"this environment's worker settings {cap['settings']}; samples (select train / "
                       f"val, refit) of the bench's ingested data: parent ({panels['parent']} tickers) "
                       f"{parent.n_train}/{parent.n_val}, {parent.n_all}; child {child.n_train}/"
                       f"{child.n_val}, {child.n_all}",
        "GPU": "not measured here: the capacity figures are one CPU core per worker (bench/gpu.py times "
               "an epoch on CUDA)",
        "detail": str(path),
    })  # fmt: skip


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    main()
