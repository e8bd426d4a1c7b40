"""`stockq` as people and scripts run it, against a live stack (gunicorn with auth on, one worker for the
training, inference and ingest queues, one for the agent, a private Redis): every command and exit code
produced for real, jobs named by the short id the console shows, followed over the event stream, cancelled
and retried. Unit-level rendering and parsing: tests/test_cli.py.

One stack serves the module; the tests run in file order (a prediction fails before the parent exists,
the training makes it, the retry then succeeds)."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner

from stockq.cli.main import main
from tests.conftest import make_settings
from tests.procs import (
    FAST_TRAINING,
    Proc,
    free_port,
    settings_env,
    start_gunicorn,
    start_redis,
    start_worker,
    wait_until,
)
from webapp.evaluation_cost import not_evaluated_text
from workers.jobs import JobRegistry

pytestmark = pytest.mark.slow
STOCKQ = str(Path(sys.executable).parent / "stockq")
KEY = "cli-test-secret-0123456789"


@dataclass
class Live:
    env: dict[str, str]
    base: str
    tmp: Path
    agent: Future[Proc]
    redis_url: str
    worker: Proc
    train_job: str = ""
    failed_job: str = ""

    def record(self, job_id: str) -> dict[str, Any]:
        """The job as the API shows it, read without the CLI."""
        headers = {"Authorization": f"Bearer {KEY}"}
        response = requests.get(f"{self.base}/status/{job_id}", headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("cli")
    procs: list[Proc] = []
    pool = ThreadPoolExecutor(1)
    agent: Future[Proc] | None = None
    try:
        # A private Redis: every shared DB number is taken by another suite.
        redis_port = free_port()
        procs.append(start_redis(redis_port, tmp / "redis"))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        settings = make_settings(tmp / "var", 0, 1, redis_url=redis_url, api_keys=f"cli:{KEY}")
        # The agent's worker loads its embedding model as it starts, the slowest start of all: it starts
        # meanwhile and only the last test waits for it. One worker serves the other queues: the jobs
        # here run one at a time anyway, and a worker's cold start is the dearest part of the stack.
        # A long lease: the Ctrl-C test holds a training with SIGSTOP, and its worker must not be found
        # lost meanwhile on a loaded machine.
        env = {**FAST_TRAINING, "STOCKQ_LEASE_S": "120"}
        agent = pool.submit(start_worker, settings, "agent", "cli-agent", **env)
        worker = start_worker(settings, "training,inference,ingest", "cli", **env)
        procs.append(worker)
        port = free_port()
        procs.append(start_gunicorn(settings, port))
        base = f"http://127.0.0.1:{port}"
        env = settings_env(settings, STOCKQ_API_URL=base, STOCKQ_API_KEY=KEY, COLUMNS="200")
        yield Live(env, base, tmp, agent, redis_url, worker)
    finally:
        if agent is not None and agent.exception() is None:
            procs.append(agent.result())
        pool.shutdown()
        # The commands run in this process left their HTTP sessions in reference cycles (a result keeps
        # its traceback's frames): collected, their keep-alive connections close, and gunicorn stops at
        # once instead of waiting its graceful 20 s for them.
        gc.collect()
        for proc in reversed(procs):
            proc.stop()


def stockq(live: Live, *args: str, real: bool = False, **env: str) -> tuple[int, Any, str]:
    """Exit code, the one JSON document on stdout, stderr. `real`: the installed entry point in a
    process of its own; else click's runner in this process (a CLI start costs seconds on a loaded
    machine), over the same real HTTP."""
    if real:
        done = subprocess.run([STOCKQ, *args, "--json"], env={**live.env, **env}, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    else:
        ran = CliRunner().invoke(main, [*args, "--json"], env={**live.env, **env})
        rc, stdout, stderr = ran.exit_code, ran.stdout, ran.stderr
    try:
        doc = json.loads(stdout)
    except ValueError as exc:
        raise AssertionError(f"stdout is not one JSON document:\n{stdout}\n{stderr}") from exc
    return rc, doc, stderr


def said(live: Live, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of what a person runs, in this process (click's runner)."""
    ran = CliRunner().invoke(main, list(args), env=live.env)
    return ran.exit_code, ran.stdout, ran.stderr


def human(live: Live, *args: str) -> str:
    """What a person sees on stdout, from the installed entry point."""
    done = subprocess.run([STOCKQ, *args], env=live.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_failed_job_exits_1_and_status_reads_it_by_its_short_id(live: Live) -> None:
    # No parent model exists yet: the forecast fails in the worker (the API accepts the known ticker).
    rc, doc, err = stockq(live, "predict", "^GSPC", "--model", "parent")
    assert rc == 1, (doc, err)
    job = doc["job"]
    assert doc["exit_code"] == 1 and job["status"] == "failed"
    assert doc["error"]["code"] == job["error"]["code"]
    live.failed_job = short = job["job_id"][:8]
    done = subprocess.run(
        [STOCKQ, "status", short], env=live.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"job       {short}  ({job['job_id']})" in done.stdout
    assert "type      predict · ^GSPC" in done.stdout and "status    failed" in done.stdout
    assert f"error     {job['error']['code']}: {job['error']['message']}" in done.stdout
    rc, raw, _ = stockq(live, "status", short)  # --json: the raw record, exit as for people
    assert rc == 1 and raw == live.record(job["job_id"])


def test_train_follows_epochs_and_ends_with_the_card(live: Live) -> None:
    rc, doc, err = stockq(live, "train", "^GSPC", "--epochs", "1", real=True)
    assert rc == 0, (doc, err)
    job, card = doc["job"], doc["card"]
    assert job["status"] == "succeeded" and job["job_id"] in err  # narration on stderr, not in stdout
    # Followed over the event stream: a line per epoch with its loss, then the end.
    short = job["job_id"][:8]
    epochs = [line for line in err.splitlines() if f" {short} running · " in line and "epoch 1/1" in line]
    assert epochs and all(" loss " in line for line in epochs), err
    assert f" {short} succeeded in " in err
    assert card["name"] == job["result"]["name"] == "stockq-parent"
    assert card["version"] == job["result"]["version"]
    # No evaluation has run: the card says so (the evaluation itself: tests/test_evaluate_job.py).
    assert card["evaluation"] is None and card["verdict"]["measurable"] is False
    assert doc["links"] == {"console": f"{live.base}/", "chart": f"{live.base}/forecast/%5EGSPC.png"}
    live.train_job = job["job_id"]


def test_retry_runs_the_failed_job_again(live: Live) -> None:
    # The parent exists now: the same prediction, retried under its id, succeeds.
    rc, out, err = said(live, "retry", live.failed_job, "--follow")
    assert rc == 0, out + err
    assert out.startswith(f"job {live.failed_job} retried: ") and ", attempt 2" in out.splitlines()[0]
    assert "status    succeeded" in out and "result    7-day forecast of ^GSPC from stockq-parent" in out
    assert f" {live.failed_job} succeeded in " in err
    rc, doc, _ = stockq(live, "retry", live.failed_job)  # a succeeded job does not retry
    assert rc == 2 and doc["error"]["code"] == "not_retryable"


def test_predict_prints_the_forecast_skill_and_saves_the_chart(live: Live) -> None:
    chart = live.tmp / "gspc.png"
    rc, doc, err = stockq(live, "predict", "^GSPC", "--chart", str(chart))
    assert rc == 0, (doc, err)
    result = doc["job"]["result"]
    assert len(result["forecast"]) == 7 and result["data_source"] == "bundled"
    assert doc["card"]["version"] == str(result["model"]["version"])
    assert doc["chart_file"] == str(chart) and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same for people: the table, that no evaluation ran yet and what one costs, the chart and the
    # console.
    text = human(live, "predict", "^GSPC")
    assert "median" in text and not_evaluated_text() in text
    assert f"{live.base}/forecast/%5EGSPC.png" in text and f"console  {live.base}/" in text


def test_every_reading_command_answers_one_json_document(live: Live) -> None:
    rc, listed, _ = stockq(live, "models")
    assert rc == 0 and [m["name"] for m in listed["models"]] == ["stockq-parent"]
    rc, card, _ = stockq(live, "models", "stockq-parent", "--version", "1")
    assert rc == 0 and card["version"] == "1" and "verdict" in card
    assert not_evaluated_text() in human(live, "models", "stockq-parent")
    rc, jobs, _ = stockq(live, "jobs", "--type", "train")
    assert rc == 0 and [j["job_id"] for j in jobs["jobs"]] == [live.train_job]
    rc, record, _ = stockq(live, "status", live.train_job)
    assert rc == 0 and record["status"] == "succeeded"
    rc, ingested, _ = stockq(live, "ingest", "^GSPC")
    assert rc == 0 and ingested["result"]["^GSPC"]["source"] == "bundled"
    assert ingested["result"]["^GSPC"]["as_of"] == "2022-12-28" and ingested["job"]["type"] == "ingest"
    rc, followed, _ = stockq(live, "status", live.train_job, "--follow")
    assert rc == 0 and followed == record
    # For people: the short ids and tickers of the jobs, and that no model has a measured skill yet.
    rc, shown, _ = said(live, "jobs")
    rows = {line.split()[1]: line for line in shown.splitlines() if line.startswith("│ ")}
    assert rc == 0 and live.train_job not in shown and live.train_job[:8] in rows
    assert "^GSPC" in rows[live.train_job[:8]] and "^GSPC" in rows[live.failed_job]
    rc, shown, err = said(live, "status", live.train_job[:8], "--logs")  # what its worker logged for it
    assert rc == 0 and "status    succeeded" in shown
    assert f"{live.train_job[:8]} log trained stockq-parent v" in err
    rc, shown, _ = said(live, "models")
    parent = next(line for line in shown.splitlines() if "stockq-parent" in line)
    assert rc == 0 and "skill" in shown and parent.rstrip(" │").endswith("—")


def test_bad_usage_exits_2(live: Live) -> None:
    rc, doc, _ = stockq(live, "train", "^GSPC", "--epochs", "0")  # the API's 422
    assert rc == 2 and doc["error"]["code"] == "validation_error" and doc["exit_code"] == 2
    rc, doc, _ = stockq(live, "train")  # click's own usage error
    assert rc == 2 and doc["error"]["code"] == "bad_usage"
    rc, doc, _ = stockq(live, "evaluate", "AAPL", "--first-year", "1800")
    assert rc == 2 and doc["error"]["code"] == "validation_error" and "first_year" in doc["error"]["message"]
    rc, doc, _ = stockq(live, "evaluate", "--universe", "world")
    assert rc == 2 and doc["error"]["code"] == "bad_usage"
    rc, doc, _ = stockq(live, "status", "0" * 32)  # nobody's job: 404
    assert rc == 2 and doc["error"]["code"] == "job_not_found"
    rc, doc, _ = stockq(live, "models", "stockq-child-NOSUCH")
    assert rc == 2 and doc["error"]["code"] == "model_not_found"


def test_an_unreachable_api_exits_3(live: Live) -> None:
    rc, doc, err = stockq(live, "jobs", real=True, STOCKQ_API_URL=f"http://127.0.0.1:{free_port()}")  # closed
    assert rc == 3 and doc["error"]["code"] == "api_unreachable" and "cannot reach the API" in err


def test_a_refused_key_exits_4(live: Live) -> None:
    rc, doc, _ = stockq(live, "models", STOCKQ_API_KEY="not-a-key-of-this-api-0123")
    assert rc == 4 and doc["error"]["code"] == "unauthorized"
    rc, doc, err = stockq(live, "predict", "^GSPC", STOCKQ_API_KEY="")
    assert rc == 4 and "STOCKQ_API_KEY" in err


def test_analyze_answers_one_json_document(live: Live) -> None:
    live.agent.result()  # its worker is up
    rc, analysis, _ = stockq(live, "analyze", "^GSPC")
    assert rc == 0 and analysis["job"]["result"]["report_markdown"]


def test_an_ambiguous_short_id_lists_its_candidates(live: Live) -> None:
    """Two of the tenant's jobs whose ids share their first 8 characters (ids chosen here, records made by
    the real registry): the 8 characters name neither, one more does."""
    ids = iter(["cafe0000" + "1" * 24, "cafe0000" + "2" * 24])

    class ChosenIds(JobRegistry):
        def new_id(self) -> str:
            return next(ids)

    jobs = ChosenIds(redis.Redis.from_url(live.redis_url), 3600)
    first, second = (jobs.create("ping", {}, "stockq.ping", owner="cli").id for _ in range(2))
    rc, doc, err = stockq(live, "status", "cafe0000")
    assert rc == 2 and doc["error"]["code"] == "ambiguous_job_id"
    assert sorted(doc["candidates"]) == [first, second] and f"\n  {first}" in err
    rc, doc, _ = stockq(live, "status", "cafe00001")
    assert rc == 0 and doc["job_id"] == first
    rc, doc, _ = stockq(live, "status", "beef0000")  # nobody's
    assert rc == 2 and doc["error"]["code"] == "job_not_found"


def _terminal_sigint() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_state(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return " ".join(line for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def test_ctrl_c_leaves_a_training_running_and_cancel_stops_it(live: Live) -> None:
    rc, ingested, _ = stockq(live, "ingest", "AAPL", "BAC", "CVX", "JNJ", "KO", "MSFT", "PG", "XOM")
    assert rc == 0 and len(ingested["result"]) == 8
    rc, accepted, _ = stockq(live, "train", "^GSPC", "--epochs", "200", "--no-wait")
    assert rc == 0
    short = accepted["job"]["job_id"][:8]
    # The training is held where it is (SIGSTOP to its worker, well within its lease) from the moment it
    # runs: early stopping could otherwise end it before the interrupt and the cancel arrive.
    wait_until(lambda: live.record(short)["status"] == "running", 120, "the training to run", every=0.05)
    os.killpg(live.worker.p.pid, signal.SIGSTOP)
    try:
        # PYTHONFAULTHANDLER: a follower that outlives its Ctrl-C is made to print where it is (SIGABRT).
        # As from a terminal: SIGINT at its default and unblocked. A follower started here once inherited a
        # state where SIGINT never reached it (blocked in a socket read, it outlived the interrupt).
        env = {**live.env, "PYTHONFAULTHANDLER": "1"}
        follower = subprocess.Popen(
            [STOCKQ, "status", short, "--follow"], env=env, text=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, preexec_fn=_terminal_sigint,
        )  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(follower.stderr or []), daemon=True)
        reader.start()
        try:
            wait_until(lambda: any("running" in line for line in lines), 60, "the follower's first line")
            state = _signal_state(follower.pid)
            follower.send_signal(signal.SIGINT)
            try:
                code = follower.wait(30)
            except subprocess.TimeoutExpired:
                follower.send_signal(signal.SIGABRT)
                code = follower.wait(10)
        finally:
            follower.kill()
        reader.join(10)
        assert code == 130, state + "\n" + "".join(lines)
        said = "".join(lines).replace("\n", " ")
        assert f"stopped following; job {short} is still running and goes on" in said, said
        assert live.record(short)["cancel_requested"] is False
        rc, doc, _ = stockq(live, "cancel", short)
        assert rc == 0 and doc["status"] == "running" and doc["cancel_requested"] is True, doc
    finally:
        os.killpg(live.worker.p.pid, signal.SIGCONT)
    rc, final, err = stockq(live, "status", short, "--follow")
    assert rc == 1 and final["status"] == "cancelled", (final, err)
    assert f" {short} cancelled" in err
    rc, doc, _ = stockq(live, "cancel", short)  # too late: the API's message, exit 2
    assert rc == 2 and doc["error"]["code"] == "job_finished"
