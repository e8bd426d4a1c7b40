"""`stockq` as scripts run it: the real entry point against a live stack (gunicorn with auth on, a worker
for every queue, a private Redis), `--json` documents that parse, and every exit code produced for real.

One stack serves the module; the tests run in file order (the first one trains the parent the others
read)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
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
)
from webapp.evaluation_cost import not_evaluated_text

pytestmark = pytest.mark.slow
STOCKQ = str(Path(sys.executable).parent / "stockq")
KEY = "cli-test-secret-0123456789"


@dataclass
class Live:
    env: dict[str, str]
    base: str
    tmp: Path
    agent: Future[Proc]
    train_job: str = ""


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
        settings = make_settings(
            tmp / "var", 0, 1, redis_url=f"redis://127.0.0.1:{redis_port}/0", api_keys=f"cli:{KEY}"
        )
        # The agent's worker loads its embedding model as it starts, the slowest start of all: it starts
        # meanwhile and only the last test waits for it. One worker serves the other queues: the jobs
        # here run one at a time anyway, and a worker's cold start is the dearest part of the stack.
        agent = pool.submit(start_worker, settings, "agent", "cli-agent", **FAST_TRAINING)
        procs.append(start_worker(settings, "training,inference,ingest", "cli", **FAST_TRAINING))
        port = free_port()
        procs.append(start_gunicorn(settings, port))
        base = f"http://127.0.0.1:{port}"
        env = settings_env(settings, STOCKQ_API_URL=base, STOCKQ_API_KEY=KEY, COLUMNS="200")
        yield Live(env, base, tmp, agent)
    finally:
        if agent is not None and agent.exception() is None:
            procs.append(agent.result())
        pool.shutdown()
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


def human(live: Live, *args: str) -> str:
    """What a person sees on stdout, from the installed entry point."""
    done = subprocess.run([STOCKQ, *args], env=live.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_train_ends_with_the_card_skill_and_where_to_look(live: Live) -> None:
    rc, doc, err = stockq(live, "train", "^GSPC", "--epochs", "1", real=True)
    assert rc == 0, (doc, err)
    job, card = doc["job"], doc["card"]
    assert job["status"] == "succeeded" and job["job_id"] in err  # narration on stderr, not in stdout
    assert card["name"] == job["result"]["name"] == "stockq-parent"
    assert card["version"] == job["result"]["version"]
    # No evaluation has run: the card says so (the evaluation itself: tests/test_evaluate_job.py).
    assert card["evaluation"] is None and card["verdict"]["measurable"] is False
    assert doc["links"] == {"console": f"{live.base}/", "chart": f"{live.base}/forecast/%5EGSPC.png"}
    live.train_job = job["job_id"]


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


def test_a_failed_job_exits_1_with_its_record(live: Live) -> None:
    rc, doc, err = stockq(live, "predict", "NOSUCH", "--model", "child")
    assert rc == 1, (doc, err)
    assert doc["exit_code"] == 1 and doc["job"]["status"] == "failed"
    assert doc["error"]["code"] == doc["job"]["error"]["code"]


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


def test_up_says_when_auto_falls_back_to_the_bundled_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Yahoo made unreachable for real: curl's requests go to a proxy on a closed port."""
    from stockq.cli.data_note import data_note
    from stockq.settings import Settings

    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{free_port()}")
    note = data_note(Settings(var_dir=tmp_path, data_source="auto"))
    assert note["online"] is False and note["served"] == "bundled" and note["ends"] == "2022-12-28"
    assert note["text"].startswith("data: auto, but Yahoo Finance is unreachable")
    assert "which ends 2022-12-28" in note["text"]
