"""Chaos benchmark: mixed submissions (ping, warm predict, batch predict, small trainings) from concurrent
clients while one of two inference workers and the training worker are SIGKILLed (the whole process group)
and restarted, twice each. Counts what the API accepted and how each job ended; the target is lost = 0 and
executed twice = 0. Loopback only, its own redis-server and var dir; bounded in count and time."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
import requests
from rich.table import Table

from bench.common import OUT_DIR, advertised_since, console, free_port, isolate, pct, report, run_job

WARM = "AAPL"  # trained before the run and never retrained in it: its predictions stay warm
TICKERS = ["^GSPC", "AAPL", "MSFT", "KO", "PEP", "JNJ", "XOM"]
TRAIN_TICKERS = ["MSFT", "KO", "PEP", "JNJ", "XOM"]
WORKERS = {"inference-a": "inference", "inference-b": "inference", "training": "training", "ingest": "ingest"}
LEASE_S = 6  # short, so a killed worker's job comes back within seconds (the default is 30)
WORKER_ENV = {
    "STOCKQ_LEASE_S": str(LEASE_S),
    "STOCKQ_TRAIN_HISTORY_DAYS": "500",
    "STOCKQ_DEFAULT_EPOCHS": "2",
    "STOCKQ_AUTO_TRAIN_EPOCHS": "2",
    # 20 clients share one address: the per-client limits would cap them (unknown names are ignored)
    "STOCKQ_RATE_LIMIT": "",
    "STOCKQ_RATE_LIMIT_TRAIN": "",
    "STOCKQ_RATE_LIMIT_PREDICT": "",
    "STOCKQ_MAX_INFLIGHT": "100000",
}
WAIT = "?wait=2"  # short jobs: the client waits for the answer, as an interactive client would


@dataclass(frozen=True)
class Submission:
    i: int
    kind: str
    path: str
    body: dict[str, Any] | None
    at_s: float  # when, after the start, the client sends it


def plan(n: int, trainings: int, duration_s: float, seed: int) -> list[Submission]:
    """`trainings` spread evenly through the run, the rest ping : predict : batch = 4 : 4 : 2."""
    rng = random.Random(seed)
    kinds = rng.choices(["ping", "predict", "batch"], weights=[4, 4, 2], k=n - trainings)
    step = n / max(trainings, 1)
    for k in range(trainings):
        kinds.insert(int(step * k + step / 2), "train")
    out = []
    for i, kind in enumerate(kinds):
        k = sum(1 for x in kinds[:i] if x == "train") if kind == "train" else 0
        path, body = {
            "ping": (f"/jobs/ping{WAIT}", None),
            "predict": (f"/predict-child{WAIT}", {"ticker": WARM}),
            "batch": (f"/predict{WAIT}", {"tickers": TICKERS[1:]}),
            "train": ("/train", {"ticker": TRAIN_TICKERS[k % len(TRAIN_TICKERS)],
                                 "strategy": ("freeze", "fine_tune")[k % 2],
                                 "epochs": 1 if k % 3 == 2 else 2}),
        }[kind]  # fmt: skip
        out.append(Submission(i, kind, path, body, duration_s * i / n))
    return out


def submit(session: requests.Session, base: str, sub: Submission) -> tuple[str | None, str]:
    """(job id, '') once accepted; else (None, why). Retried under the same Idempotency-Key, so a request
    whose answer was lost cannot create a second job."""
    why = ""
    for _ in range(4):
        try:
            r = session.post(base + sub.path, json=sub.body, headers={"Idempotency-Key": f"chaos-{sub.i}"},
                             timeout=30)  # fmt: skip
        except requests.RequestException as exc:
            why = type(exc).__name__
            time.sleep(0.5)
            continue
        if r.status_code in (200, 202):
            body = r.json()
            return body.get("job_id") or body["id"], ""
        why = f"http_{r.status_code}"
        if r.status_code < 500 and r.status_code != 429:
            break
        time.sleep(0.5)
    return None, why


class Chaos(threading.Thread):
    """Supervises the stack's children (a killed one is restarted by the supervisor, as under `stockq up`)
    and SIGKILLs each victim's process group at its times: an inference worker while it runs a job, the
    training worker once a training there has finished an epoch and has one to go (so the retry can
    resume from a checkpoint); after 20 s without such a moment, whatever it is doing."""

    def __init__(self, stack: Any, client: redis.Redis, schedule: list[tuple[float, str]], t0: float) -> None:
        super().__init__(name="chaos", daemon=True)
        self.stack, self.r, self.t0 = stack, client, t0
        self.pending = sorted(schedule)
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.killing = True  # cleared when the submissions end: no kill during the drain

    def running_on(self, name: str) -> list[dict[str, Any]]:
        from workers.jobs.keys import LEASES

        out = []
        for raw in self.r.zrange(LEASES, 0, -1):
            job = self.r.hgetall(f"stockq:job:{raw.decode()}")
            if job.get(b"worker", b"").decode().startswith(name + "@"):
                out.append({k.decode(): v.decode() for k, v in job.items()})
        return out

    def ripe(self, name: str, due_s: float) -> list[dict[str, Any]] | None:
        """The jobs running on `name` when it is time to kill it, else None. A victim is killed again only
        once it is back from its last kill (killing a worker still starting up is another experiment)."""
        if any(e["worker"] == name and e["back_after_s"] is None for e in self.events):
            return None
        running = self.running_on(name)
        if time.monotonic() - self.t0 > due_s + 20:
            return running
        for job in running:
            progress = json.loads(job.get("progress") or "{}")
            # the stage too: a retried job shows its last attempt's progress while it ingests again
            mid = (
                job.get("stage", "").startswith("train_")
                and 1 <= progress.get("epoch", 0) < progress["epochs"]
            )
            if name != "training" or mid:
                return running
        return None

    def kill(self, name: str, running: list[dict[str, Any]]) -> None:
        proc = self.stack.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        at = time.monotonic() - self.t0
        states = [f"{j['type']} {j.get('stage') or ''} {j.get('progress') or ''}".strip() for j in running]
        self.events.append({"at_s": round(at, 1), "worker": name, "pid": proc.pid,
                            "running": [j["id"] for j in running], "states": states,
                            "killed_at": time.time(), "back_after_s": None})  # fmt: skip
        console.print(f"[red]t={at:.0f}s SIGKILL {name} (pid {proc.pid}), running {states}")

    def run(self) -> None:
        while not self.done.is_set():
            self.stack.supervisor.poll()
            now = time.monotonic() - self.t0
            due = [p for p in self.pending if p[0] <= now and self.killing]
            for at, name in due:
                running = self.ripe(name, at)
                if running is not None and self.stack.procs[name] is not None:
                    self.pending.remove((at, name))
                    self.kill(name, running)
                    break
            for event in self.events:
                name = event["worker"]
                if event["back_after_s"] is None and advertised_since(
                    self.r, WORKERS[name], name, event["killed_at"]
                ):
                    event["back_after_s"] = round(time.time() - event["killed_at"], 1)
            # Looked at often while a kill is due: an inference job runs for tens of milliseconds.
            quick = any(name != "training" for _, name in due)
            self.done.wait(0.005 if quick else 0.05 if due else 0.2)


def start_stack(var: Any) -> tuple[Any, Any, str]:
    from ml.registry.mlflow_store import ensure_tracking_store
    from stockq.cli.stack import Stack, gunicorn_argv, worker_argv

    settings = isolate(var, free_port(), **WORKER_ENV)
    stack = Stack(settings, var / "logs")
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    stack.ensure_redis()  # its own redis-server on the free port, AOF under the var dir
    ensure_tracking_store(settings.tracking_uri, settings.artifact_root)
    spawn = stack.supervisor.spawn
    spawn("api", gunicorn_argv(settings.api_port), env={"PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus")})
    for name, queue in WORKERS.items():
        spawn(name, [*worker_argv(queue, 1, name), "--without-mingle", "--without-gossip"])
    client = redis.Redis.from_url(settings.redis_url)
    base = f"http://127.0.0.1:{settings.api_port}"
    deadline = time.monotonic() + 180
    since = time.time() - 1
    while not all(advertised_since(client, q, n, since) for n, q in WORKERS.items()):
        stack.supervisor.poll()
        if time.monotonic() > deadline:
            stack.stop()
            raise SystemExit(f"workers not up in 180 s; logs in {stack.log_dir}")
        time.sleep(0.5)
    return stack, settings, base


def warm_up(base: str) -> None:
    s = requests.Session()
    run_job(s, base, "/ingest", {"tickers": TICKERS}, timeout_s=300)
    run_job(s, base, "/train", {"ticker": "^GSPC", "epochs": 2}, timeout_s=300)
    run_job(s, base, "/train", {"ticker": WARM, "epochs": 2}, timeout_s=300)
    for _ in range(10):  # the model loaded in both inference processes, the caches filled
        run_job(s, base, "/predict-child", {"ticker": WARM}, timeout_s=120)
        run_job(s, base, "/predict", {"tickers": TICKERS[1:]}, timeout_s=120)


def mlflow_side_effects(settings: Any, train_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per training job: MLflow runs tagged with its id and model versions those runs registered."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    out = {}
    for job_id in train_ids:
        runs = client.search_runs(experiments, filter_string=f"tags.`stockq.job_key` = '{job_id}'")
        versions = [len(client.search_model_versions(f"run_id = '{r.info.run_id}'")) for r in runs]
        out[job_id] = {"runs": len(runs), "versions": sum(versions), "max_per_run": max(versions, default=0)}
    return out


def drain(jobs: Any, ids: list[str], bound_s: float) -> dict[str, dict[str, Any]]:
    """Every accepted job's record, waiting up to `bound_s` for all of them to finish."""
    from workers.jobs import FINISHED

    records: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + bound_s
    while True:
        for job_id in ids:
            if job_id not in records or records[job_id]["status"] not in FINISHED:
                found = jobs.get(job_id)
                records[job_id] = found.to_api() if found else {"status": "missing"}
        if all(r["status"] in FINISHED for r in records.values()) or time.monotonic() > deadline:
            return records
        time.sleep(1)


def twice(job: dict[str, Any], side: dict[str, int] | None) -> bool:
    if int(job.get("executions") or 0) >= 2:
        return True
    return side is not None and (side["runs"] > 1 or side["max_per_run"] > 1)


def rows_by_type(accepted: dict[str, str], records: dict, side: dict) -> list[dict[str, Any]]:
    from workers.jobs import FINISHED

    rows = []
    for kind in ["ping", "predict", "batch", "train", "all"]:
        ids = [j for j, k in accepted.items() if kind in ("all", k)]
        if not ids:
            continue
        recs = [records[j] for j in ids]
        finals = [r["finished_at"] - r["submitted_at"] for r in recs if r["status"] in FINISHED]
        rows.append({
            "type": kind,
            "accepted": len(ids),
            "succeeded": sum(r["status"] == "succeeded" for r in recs),
            "failed": sum(r["status"] == "failed" for r in recs),
            "cancelled": sum(r["status"] == "cancelled" for r in recs),
            "lost": sum(r["status"] not in FINISHED for r in recs),
            "executed_twice": sum(twice(records[j], side.get(j)) for j in ids),
            "requeued": sum(int(r.get("attempt") or 1) > 1 for r in recs),
            "p50_s": round(pct(finals, 50), 3) if finals else None,
            "p99_s": round(pct(finals, 99), 3) if finals else None,
        })  # fmt: skip
    return rows


def timeline(job: dict[str, Any]) -> list[str]:
    return [f"#{a['attempt']} {a['worker']} {a['outcome']} {a['ended_at'] - a['started_at']:.1f}s"
            for a in job.get("attempts") or []]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--trainings", type=int, default=16)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds the submissions span")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the last jobs")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    console.width = max(console.width, 120)  # the table has ten columns
    var = OUT_DIR / "chaos-var"
    shutil.rmtree(var, ignore_errors=True)
    started = time.monotonic()
    stack, settings, base = start_stack(var)
    try:
        warm_up(base)
        warm_s = time.monotonic() - started
        from workers.jobs import JobRegistry

        client = redis.Redis.from_url(settings.redis_url)
        jobs = JobRegistry(client, settings.job_retention_s)
        before = {m.decode() for m in client.zrange("stockq:jobs", 0, -1)}
        d = args.duration
        schedule = [(0.15 * d, "inference-b"), (0.3 * d, "training"), (0.55 * d, "inference-b"),
                    (0.7 * d, "training")]  # fmt: skip
        subs = plan(args.submissions, args.trainings, d, args.seed)
        t0 = time.monotonic()
        chaos = Chaos(stack, client, schedule, t0)
        chaos.start()
        local = threading.local()

        def client_run(sub: Submission) -> tuple[Submission, str | None, str]:
            time.sleep(max(0.0, sub.at_s - (time.monotonic() - t0)))
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return (sub, *submit(local.session, base, sub))

        with ThreadPoolExecutor(args.clients) as pool:
            answers = list(pool.map(client_run, subs))
        submit_s = time.monotonic() - t0
        chaos.killing = False
        accepted = {job_id: sub.kind for sub, job_id, _ in answers if job_id}
        records = drain(jobs, list(accepted), args.drain)
        drain_s = time.monotonic() - t0 - submit_s
        chaos.done.set()
        chaos.join()
        created = {m.decode() for m in client.zrange("stockq:jobs", 0, -1)} - before
        held = broker_messages(client)
        side = mlflow_side_effects(settings, [j for j, k in accepted.items() if k == "train"])
    finally:
        stack.stop(timeout_s=10)
    _print_kills(chaos.events, records)
    extra = {
        "submissions": args.submissions, "clients": args.clients, "trainings": args.trainings,
        "lease_s": LEASE_S, "start_and_warm_up_s": round(warm_s, 1), "submit_phase_s": round(submit_s, 1),
        "drain_s": round(drain_s, 1),
        "total_s": round(time.monotonic() - started, 1),
        "not_accepted": dict(Counter(why for _, job_id, why in answers if not job_id)),
        "records_never_answered": len(created - set(accepted)),
        **outcomes(accepted, records, side, held),
        "kills": [{k: v for k, v in e.items() if k != "killed_at"} for e in chaos.events],
        "kills_not_done": [name for _, name in chaos.pending],
    }  # fmt: skip
    rows = rows_by_type(accepted, records, side)
    report("chaos", rows, extra)
    if rows[-1]["lost"] or rows[-1]["executed_twice"]:
        raise SystemExit("target missed: lost = 0 and executed twice = 0 (details above and in the JSON)")


def broker_messages(client: redis.Redis) -> dict[str, str]:
    """Celery task id -> where its message is: still in a queue, or taken by a worker and not acknowledged
    (kombu's `unacked` hash; it comes back only after the visibility timeout)."""
    from workers.celery_app import QUEUES

    where = {json.loads(raw)[0]["headers"]["id"]: "unacked" for raw in client.hvals("unacked")}
    for queue in QUEUES:
        where |= {json.loads(raw)["headers"]["id"]: f"queue {queue}" for raw in client.lrange(queue, 0, -1)}
    return where


def outcomes(accepted: dict[str, str], records: dict, side: dict, held: dict[str, str]) -> dict[str, Any]:
    """Why jobs failed, which were lost or ran twice (with their attempts), how trainings resumed."""
    from workers.dispatch import task_id
    from workers.jobs import FINISHED

    failed = Counter(
        (r.get("error") or {}).get("code", "?") for r in records.values() if r["status"] == "failed"
    )
    trains = [records[j] for j, k in accepted.items() if k == "train"]
    resumed = [(r.get("result") or {}).get("resumed_from_epoch") or 0 for r in trains]
    return {
        "failed_by_reason": dict(failed),
        "trainings_resumed_from_a_checkpoint": sum(e >= 1 for e in resumed),
        "training_mlflow_runs_versions": {j[:8]: v for j, v in side.items()},
        "lost_jobs": {
            j: {"type": accepted[j], "status": r["status"], "stage": r.get("stage"),
                "attempt": r.get("attempt"), "worker": r.get("worker"), "attempts": timeline(r),
                "message": held.get(task_id(j, int(r.get("attempt") or 1)), "nowhere: lost")}
            for j, r in records.items() if r["status"] not in FINISHED
        },
        "executed_twice_jobs": {
            j: {"type": accepted[j], "executions": r.get("executions"), "mlflow": side.get(j),
                "attempts": timeline(r)}
            for j, r in records.items() if twice(r, side.get(j))
        },
    }  # fmt: skip


def _print_kills(events: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> None:
    table = Table(title="chaos: SIGKILLs (whole process group; the supervisor restarts the worker)")
    for column in ("t_s", "worker", "back_after_s", "jobs running there: how they ended"):
        table.add_column(column)
    for e in events:
        ended = [f"{j[:8]} {records.get(j, {}).get('status', 'not in the run')} "
                 f"{timeline(records.get(j, {}))}" for j in e["running"]]  # fmt: skip
        table.add_row(str(e["at_s"]), e["worker"], str(e["back_after_s"]), "\n".join(ended) or "-")
    console.print(table)


if __name__ == "__main__":
    main()
