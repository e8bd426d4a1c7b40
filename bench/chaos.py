"""Chaos benchmark: mixed submissions (ping, warm predict, batch predict, small trainings) from concurrent
clients while one of two inference workers and the training worker are SIGKILLed (the whole process group)
and restarted, twice each, the API is SIGKILLed once (a publisher killed between a job's state change and
its publish) and the registry Redis is stopped for `--redis-outage` seconds while messages are delivered
(with `--broker redis` the broker stops with it). `--broker amqp` puts the queues on the machine's RabbitMQ,
in a private vhost.

Counts what the API accepted and how each job ended. Execution is at least once: a job whose worker died
mid-work is started again (`started_twice`: jobs whose work began in two attempts or more, or trainings
with two MLflow runs). The outcome is recorded once (`outcome_twice`: jobs with two recorded outcomes) and
so is a training's model version (`trainings_with_two_model_versions`). The targets are lost = 0 (records
no client got an answer for included), outcome_twice = 0 and one model version per training. Loopback
only, its own redis-server and var dir; bounded in count and time."""

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
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import redis
import requests
from rich.table import Table

from bench.common import OUT_DIR, advertised_since, console, free_port, isolate, pct, report, run_job
from bench.scale_brokers import rabbit_vhost

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
SUBMIT_RETRY_S = 60.0  # longer than the Redis outage and an API restart
DRAIN_CAP_S = 1800.0  # the drain's bound however much still moves


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
    """(job id, '') once accepted; else (None, why). Retried with backoff for up to SUBMIT_RETRY_S (a
    client riding out a restarted API or a Redis outage), always under the same Idempotency-Key, so a
    request whose answer was lost cannot create a second job."""
    why, pause = "", 0.25
    deadline = time.monotonic() + SUBMIT_RETRY_S
    while True:
        try:
            r = session.post(base + sub.path, json=sub.body, headers={"Idempotency-Key": f"chaos-{sub.i}"},
                             timeout=30)  # fmt: skip
        except requests.RequestException as exc:
            r, why = None, type(exc).__name__
        if r is not None and r.status_code in (200, 202):
            body = r.json()
            return body.get("job_id") or body["id"], ""
        if r is not None:
            why = f"http_{r.status_code}"
            if r.status_code < 500 and r.status_code != 429:
                break
        if time.monotonic() + pause > deadline:
            break
        time.sleep(pause)
        pause = min(4.0, pause * 2)
    return None, why


class Chaos(threading.Thread):
    """Supervises the stack's children (a killed one is restarted by the supervisor, as under `stockq up`)
    and strikes each victim at its time: SIGKILL to a worker's process group (an inference worker while it
    runs a job; the training worker once a training there has finished an epoch and has one to go, so the
    retry can resume from a checkpoint; after 20 s without such a moment, whatever it is doing), SIGKILL to
    the API's, and a stop of the registry Redis (SIGTERM: its append-only file is flushed), started again
    `redis_outage_s` later."""

    def __init__(self, stack: Any, client: redis.Redis, schedule: list[tuple[float, str]], t0: float,
                 base: str, redis_outage_s: float) -> None:  # fmt: skip
        super().__init__(name="chaos", daemon=True)
        self.stack, self.r, self.t0, self.base = stack, client, t0, base
        self.pending = sorted(schedule)
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.killing = True  # cleared when the submissions end: no kill during the drain
        self.redis_outage_s = redis_outage_s
        self.redis_due_at: float | None = None  # when the stopped Redis is started again (monotonic)

    def running_on(self, name: str | None) -> list[dict[str, Any]]:
        """The jobs running on worker `name` (None: anywhere)."""
        from workers.jobs.keys import LEASES

        out = []
        for raw in self.r.zrange(LEASES, 0, -1):
            job = self.r.hgetall(f"stockq:job:{raw.decode()}")
            if name is None or job.get(b"worker", b"").decode().startswith(name + "@"):
                out.append({k.decode(): v.decode() for k, v in job.items()})
        return out

    def ripe(self, name: str, due_s: float) -> list[dict[str, Any]] | None:
        """The jobs running on `name` (Redis: anywhere) when it is time to strike it, else None. A victim
        is struck again only once it is back from its last strike (striking a worker still starting up is
        another experiment)."""
        if any(e["victim"] == name and e["back_after_s"] is None for e in self.events):
            return None
        if name not in WORKERS:
            return self.running_on(None) if name == "redis" else []
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

    def strike(self, name: str, running: list[dict[str, Any]]) -> None:
        if name == "redis":
            pid = self.stack.procs["redis"].pid
            self.stack.supervisor.stop(["redis"], 10.0)  # out of supervision until its outage is over
            self.redis_due_at = time.monotonic() + self.redis_outage_s
            fault = f"stopped for {self.redis_outage_s:.0f} s"
        else:
            pid = self.stack.procs[name].pid
            os.killpg(pid, signal.SIGKILL)
            fault = "SIGKILL"
        at = time.monotonic() - self.t0
        states = [f"{j['type']} {j.get('stage') or ''} {j.get('progress') or ''}".strip() for j in running]
        self.events.append({"at_s": round(at, 1), "victim": name, "fault": fault, "pid": pid,
                            "running": [j["id"] for j in running], "states": states,
                            "struck_at": time.time(), "back_after_s": None})  # fmt: skip
        console.print(f"[red]t={at:.0f}s {fault} {name} (pid {pid}), running {states}")

    def back(self, event: dict[str, Any]) -> bool:
        name = event["victim"]
        if name == "redis":
            return self.redis_due_at is None
        if name == "api":
            try:
                return requests.get(f"{self.base}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        return advertised_since(self.r, WORKERS[name], name, event["struck_at"])

    def step(self) -> list[tuple[float, str]]:
        """One look: strike what is due and ripe, note who is back; what is still due."""
        now = time.monotonic() - self.t0
        due = [p for p in self.pending if p[0] <= now and self.killing]
        for at, name in due:
            running = self.ripe(name, at)
            if running is not None and self.stack.procs.get(name) is not None:
                self.pending.remove((at, name))
                self.strike(name, running)
                break
        for event in self.events:
            if event["back_after_s"] is None and self.back(event):
                event["back_after_s"] = round(time.time() - event["struck_at"], 1)
        return due

    def run(self) -> None:
        while not self.done.is_set():
            self.stack.supervisor.poll()
            if self.redis_due_at is not None and time.monotonic() >= self.redis_due_at:
                self.stack.ensure_redis()  # the same port and append-only file, supervised again
                self.redis_due_at = None
            try:
                due = self.step()
            except redis.RedisError:
                due = []  # Redis is stopped: nothing to look at until it is back
            # Looked at often while a kill is due: an inference job runs for tens of milliseconds.
            quick = any(name not in ("training", "api", "redis") for _, name in due)
            self.done.wait(0.005 if quick else 0.05 if due else 0.2)


def start_stack(var: Any, broker_url: str | None) -> tuple[Any, Any, str]:
    from ml.registry.mlflow_store import ensure_tracking_store
    from stockq.cli.stack import Stack, gunicorn_argv, worker_argv

    os.environ.pop("STOCKQ_BROKER_URL", None)  # the broker is the bench's own Redis unless given
    settings = isolate(
        var, free_port(), **WORKER_ENV, **({"STOCKQ_BROKER_URL": broker_url} if broker_url else {})
    )
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


def drain(jobs: Any, ids: list[str], idle_s: float) -> dict[str, dict[str, Any]]:
    """Every job's record once all are final, or once none of the unfinished ones has moved (status,
    attempt, stage or progress) for `idle_s`: those are lost. A backlog of trainings behind a restarted
    worker still moves, however long it takes (up to DRAIN_CAP_S)."""
    from workers.jobs import FINISHED

    records: dict[str, dict[str, Any]] = {}
    seen: dict[str, tuple[Any, ...]] = {}
    moved = started = time.monotonic()
    while True:
        for job_id in ids:
            if job_id not in records or records[job_id]["status"] not in FINISHED:
                found = jobs.get(job_id)
                records[job_id] = found.to_api() if found else {"status": "missing"}
                r = records[job_id]
                now = (r["status"], r.get("attempt"), r.get("stage"), json.dumps(r.get("progress")))
                if seen.get(job_id) != now:
                    seen[job_id], moved = now, time.monotonic()
        if all(r["status"] in FINISHED for r in records.values()):
            return records
        if time.monotonic() - moved > idle_s or time.monotonic() - started > DRAIN_CAP_S:
            return records
        time.sleep(1)


def started_attempts(job: dict[str, Any]) -> int:
    """Attempts whose work began (the start script ran for them; a message lost before any start, logged
    `message_lost`, began nothing). Every ended attempt is logged, the final one by the finishing script."""
    return sum(1 for a in job.get("attempts") or [] if a.get("started_at"))


def started_twice(job: dict[str, Any], side: dict[str, int] | None) -> bool:
    """The work began more than once: at-least-once execution after a worker died mid-job (a training
    with two MLflow runs began from scratch twice; one resumed from its checkpoint keeps its run)."""
    return started_attempts(job) >= 2 or (side is not None and side["runs"] > 1)


def outcome_twice(job: dict[str, Any]) -> bool:
    """More than one outcome recorded: the finishing script records the outcome and counts it in one step
    and refuses a job already final, so the target is none."""
    return int(job.get("executions") or 0) >= 2


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
            "started_twice": sum(started_twice(records[j], side.get(j)) for j in ids),
            "outcome_twice": sum(outcome_twice(records[j]) for j in ids),
            "requeued": sum(int(r.get("attempt") or 1) > 1 for r in recs),
            "p50_s": round(pct(finals, 50), 3) if finals else None,
            "p99_s": round(pct(finals, 99), 3) if finals else None,
        })  # fmt: skip
    return rows


def timeline(job: dict[str, Any]) -> list[str]:
    return [f"#{a['attempt']} {a['worker']} {a['outcome']} "
            + (f"{a['ended_at'] - a['started_at']:.1f}s" if a.get("started_at") else "never started")
            for a in job.get("attempts") or []]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis",
                        help="the bench's own Redis, or a vhost of this machine's RabbitMQ")  # fmt: skip
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--trainings", type=int, default=16)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds the submissions span")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="seconds with no unfinished job moving: the rest count as lost")  # fmt: skip
    parser.add_argument("--redis-outage", type=float, default=20.0,
                        help="seconds the registry Redis stays stopped (0: not stopped)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    console.width = max(console.width, 120)  # the table has eleven columns
    with rabbit_vhost("stockq-bench-chaos") if args.broker == "amqp" else nullcontext(None) as broker_url:
        rows, extra = run(args, broker_url)
    rows_all = rows[-1]
    report(f"chaos-{args.broker}", rows, extra)
    if rows_all["lost"] or rows_all["outcome_twice"] or extra["never_answered"]["not_final"]:
        raise SystemExit("target missed: lost = 0 and outcome twice = 0 (details above and in the JSON)")
    if extra["trainings_with_two_model_versions"]:
        raise SystemExit("target missed: one model version per training (details above and in the JSON)")


def run(args: argparse.Namespace, broker_url: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    var = OUT_DIR / f"chaos-{args.broker}-var"
    shutil.rmtree(var, ignore_errors=True)
    started = time.monotonic()
    stack, settings, base = start_stack(var, broker_url)
    try:
        warm_up(base)
        warm_s = time.monotonic() - started
        from workers.jobs import FINISHED, JobRegistry

        client = redis.Redis.from_url(settings.redis_url)
        jobs = JobRegistry(client, settings.job_retention_s)
        before = {m.decode() for m in client.zrange("stockq:jobs", 0, -1)}
        d = args.duration
        schedule = [(0.15 * d, "inference-b"), (0.3 * d, "training"), (0.55 * d, "inference-b"),
                    (0.7 * d, "training"), (0.8 * d, "api")]  # fmt: skip
        if args.redis_outage > 0:
            schedule.append((0.4 * d, "redis"))
        subs = plan(args.submissions, args.trainings, d, args.seed)
        t0 = time.monotonic()
        chaos = Chaos(stack, client, schedule, t0, base, args.redis_outage)
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
        # Records no client got an answer for (a 503 after the record was written, an API killed mid-request)
        # must end too: a queued one would hold an in-flight slot for ever.
        never_answered = sorted(
            {m.decode() for m in client.zrange("stockq:jobs", 0, -1)} - before - set(accepted)
        )
        records = drain(jobs, [*accepted, *never_answered], args.drain)
        drain_s = time.monotonic() - t0 - submit_s
        chaos.done.set()
        chaos.join()
        held, depths = broker_messages(settings, client)
        side = mlflow_side_effects(settings, [j for j, k in accepted.items() if k == "train"])
    finally:
        stack.stop(timeout_s=10)
    _print_faults(chaos.events, records)
    types = {**dict.fromkeys(never_answered, "never answered"), **accepted}
    extra = {
        "broker": args.broker, "submissions": args.submissions, "clients": args.clients,
        "trainings": args.trainings, "lease_s": LEASE_S, "redis_outage_s": args.redis_outage,
        "start_and_warm_up_s": round(warm_s, 1), "submit_phase_s": round(submit_s, 1),
        "drain_s": round(drain_s, 1), "total_s": round(time.monotonic() - started, 1),
        "not_accepted": dict(Counter(why for _, job_id, why in answers if not job_id)),
        "never_answered": {"records": len(never_answered),
                           "by_status": dict(Counter(records[j]["status"] for j in never_answered)),
                           "not_final": sum(records[j]["status"] not in FINISHED for j in never_answered)},
        "ready_in_broker_after_drain": depths,
        **outcomes(types, records, side, held, settings.broker_is_amqp),
        "faults": [{k: v for k, v in e.items() if k != "struck_at"} for e in chaos.events],
        "faults_not_done": [name for _, name in chaos.pending],
    }  # fmt: skip
    return rows_by_type(accepted, records, side), extra


def broker_messages(settings: Any, client: redis.Redis) -> tuple[dict[str, str], dict[str, int]]:
    """(Celery task id -> where its message is, messages ready per queue). On the Redis broker a message
    is in a queue or taken by a worker and not acknowledged (kombu's `unacked` hash; it comes back only
    after the visibility timeout); RabbitMQ shows no message by id, only its queues' depths."""
    from workers.broker_amqp import queue_depths
    from workers.celery_app import QUEUES

    if settings.broker_is_amqp:
        return {}, queue_depths(settings.broker, QUEUES)
    where = {json.loads(raw)[0]["headers"]["id"]: "unacked" for raw in client.hvals("unacked")}
    for queue in QUEUES:
        where |= {json.loads(raw)["headers"]["id"]: f"queue {queue}" for raw in client.lrange(queue, 0, -1)}
    return where, {queue: int(client.llen(queue)) for queue in QUEUES}


def outcomes(types: dict[str, str], records: dict, side: dict, held: dict[str, str],
             amqp: bool) -> dict[str, Any]:  # fmt: skip
    """Why jobs failed, which were lost, started twice or recorded twice (with their attempts), how
    trainings resumed and how many model versions each registered."""
    from workers.dispatch import task_id
    from workers.jobs import FINISHED

    failed = Counter(
        (r.get("error") or {}).get("code", "?") for r in records.values() if r["status"] == "failed"
    )
    trains = [records[j] for j, k in types.items() if k == "train"]
    resumed = [(r.get("result") or {}).get("resumed_from_epoch") or 0 for r in trains]
    return {
        "failed_by_reason": dict(failed),
        "trainings_resumed_from_a_checkpoint": sum(e >= 1 for e in resumed),
        "training_mlflow_runs_versions": {j[:8]: v for j, v in side.items()},
        "trainings_with_two_model_versions": sum(v["versions"] > 1 for v in side.values()),
        "lost_jobs": {
            j: {"type": types[j], "status": r["status"], "stage": r.get("stage"),
                "attempt": r.get("attempt"), "worker": r.get("worker"), "attempts": timeline(r),
                "message": held.get(task_id(j, int(r.get("attempt") or 1)),
                                   "RabbitMQ shows no message by id" if amqp else "nowhere: lost")}
            for j, r in records.items() if r["status"] not in FINISHED
        },
        "started_twice_jobs": {
            j: {"type": types[j], "mlflow": side.get(j), "attempts": timeline(r)}
            for j, r in records.items() if started_twice(r, side.get(j))
        },
        "outcome_twice_jobs": {
            j: {"type": types[j], "executions": r.get("executions"), "attempts": timeline(r)}
            for j, r in records.items() if outcome_twice(r)
        },
    }  # fmt: skip


def _print_faults(events: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> None:
    table = Table(
        title="chaos: faults (a SIGKILL reaches the whole process group; the supervisor restarts it)"
    )
    for column in ("t_s", "victim", "fault", "back_after_s", "jobs running there: how they ended"):
        table.add_column(column)
    for e in events:
        ended = [f"{j[:8]} {records.get(j, {}).get('status', 'not in the run')} "
                 f"{timeline(records.get(j, {}))}" for j in e["running"]]  # fmt: skip
        table.add_row(
            str(e["at_s"]), e["victim"], e["fault"], str(e["back_after_s"]), "\n".join(ended) or "-"
        )
    console.print(table)


if __name__ == "__main__":
    main()
