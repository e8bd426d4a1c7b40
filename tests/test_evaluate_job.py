"""The `evaluate` job's outer layers: what the CLI, the console and the cards make of an evaluation summary,
and, end to end, a real gunicorn and training worker evaluating bundled tickers: progress per origin, the
headline as the result, the CLI's report, and a cancel between origins."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from rich.console import Console

from stockq.cli.main import main
from stockq.cli.render import print_card, quoted_evaluation, skill_line
from stockq.settings import Settings
from tests.conftest import make_settings
from tests.procs import Proc, free_port, settings_env, start_all, start_gunicorn, start_redis, start_worker
from webapp import create_app
from webapp.evaluation_cost import not_evaluated_text
from workers.evaluation import evaluation_config, headline

FORECASTERS = ("zero_ewma", "ewma_fhs", "garch_t_fhs", "har_pooled")
TICKERS = ["AAPL", "MSFT", "KO"]
# The worker's evaluation: one epoch per refit and the fewest bootstrap draws, so a run takes seconds.
SMALL_EVALUATION = {
    "STOCKQ_EVALUATE_EPOCHS": "1",
    "STOCKQ_EVALUATE_WARM_EPOCHS": "1",
    "STOCKQ_EVALUATE_BOOTSTRAP_REPS": "50",
}

ALIAS_CHECK_S = "0.5"  # how often the serving worker looks for a new champion or a new evaluation


def skill(value: float, lo: float, hi: float, p: float) -> dict[str, float]:
    return {"skill": value, "lo": lo, "hi": hi, "dm_statistic": 1.0, "dm_p_value": p, "block_length": 5}


# Shaped as ml.evaluation.run.evaluate_panel returns it (the plan's contract); the figures are made up.
SUMMARY: dict[str, Any] = {
    "run_id": "0123abcd", "evaluated_at": "2026-05-01T03:12:00+00:00", "recipe": "global",
    "universe": "panel", "config": {"first_year": 2021}, "reference": "zero_ewma",
    "baselines": ["ewma_fhs", "garch_t_fhs", "har_pooled"], "period": ["2021-01-04", "2022-12-16"],
    "tickers": ["AAPL", "KO", "MSFT", "^GSPC"], "n_decisions": 492, "origins": 2, "device": "cpu",
    "seconds": 93.0,
    "pooled": {
        "pinball": {"global": 0.01021, "zero_ewma": 0.01034, "ewma_fhs": 0.01030, "garch_t_fhs": 0.01025,
                    "har_pooled": 0.01040},
        "coverage_80": {"global": 0.79, "zero_ewma": 0.76, "ewma_fhs": 0.80, "garch_t_fhs": 0.81,
                        "har_pooled": 0.74},
        "skill": {"zero_ewma": skill(0.0126, 0.004, 0.021, 0.012),
                  "ewma_fhs": skill(0.009, -0.002, 0.02, 0.2),
                  "garch_t_fhs": skill(0.004, -0.006, 0.014, 0.52),
                  "har_pooled": skill(0.018, 0.0, 0.03, 0.09)},
    },
    "per_ticker": {"AAPL": {}}, "calibration": {"levels": [0.1], "shifts": [[0.0]]},
    "verdict": {"text": "skill +1.3% (90 % interval +0.4% to +2.1%) over zero+EWMA", "measurable": True,
                "skill": 0.0126, "lo": 0.004, "hi": 0.021, "dm_p_value": 0.012, "reference": "zero_ewma",
                "against": {}},
    "counts": {"tickers": 4, "skill_over_reference": 1, "coverage_80_in_75_85": 3},
    "losses_artifact": "losses.parquet",
}  # fmt: skip


def rendered(card: dict[str, Any]) -> str:
    console = Console(record=True, width=200)
    print_card(console, card)
    return console.export_text()


def test_a_card_shows_its_evaluation_or_that_none_ran_and_what_one_costs() -> None:
    card = {"name": "stockq-parent", "version": "3", "champion": True, "trained_until": "2022-12-28",
            "evaluation": SUMMARY, "verdict": SUMMARY["verdict"],
            "decision": {"text": "promoted"}}  # fmt: skip
    text = rendered(card)
    assert SUMMARY["verdict"]["text"] in text and skill_line(card) == SUMMARY["verdict"]["text"]
    assert "evaluation of 2026-05-01" in text and "decisions 2021-01-04 to 2022-12-16" in text
    assert "4 tickers" in text and "1 of 4 show skill over zero+EWMA" in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert set(FORECASTERS) | {"global"} <= set(rows)
    assert "+1.3% (+0.4% to +2.1%)" in rows["zero_ewma"] and "0.012" in rows["zero_ewma"]
    assert "0.520" in rows["garch_t_fhs"] and "79.0%" in rows["global"]
    assert "losses.parquet in MLflow run 0123abcd" in text and "decision: promoted" in text
    assert quoted_evaluation(card).startswith("quotes the evaluation of 2026-05-01: decisions 2021-01-04")

    bare = {**card, "evaluation": None, "verdict": {"measurable": False, "text": "not evaluated yet"}}
    assert not_evaluated_text() in rendered(bare) and quoted_evaluation(bare) == not_evaluated_text()
    assert "stockq evaluate" in not_evaluated_text() and "minutes" in not_evaluated_text()


def test_the_console_page_carries_the_not_evaluated_sentence(tmp_path: Path) -> None:
    page = create_app(make_settings(tmp_path, 10, 11)).test_client().get("/").get_data(as_text=True)
    assert f'data-not-evaluated="{not_evaluated_text()}"' in page


def test_the_job_s_config_comes_from_the_request_then_the_worker_s_settings() -> None:
    s = Settings(evaluate_first_year=2010, evaluate_epochs=5, evaluate_warm_epochs=2, evaluate_stride=8,
                 evaluate_bootstrap_reps=200, parent_universe="gspc")  # fmt: skip
    config = evaluation_config(s, None, None, None)
    assert (config.first_year, config.refit_months, config.universe, config.bootstrap_reps) == (
        2010, 12, "gspc", 200)  # fmt: skip
    assert (config.model.epochs, config.model.warm_epochs, config.model.stride) == (5, 2, 8)
    asked = evaluation_config(s, "panel", 2021, 6)
    assert (asked.first_year, asked.refit_months, asked.universe) == (2021, 6, "panel")
    # The per-ticker table and the serving calibration stay on the card and in the run.
    assert set(SUMMARY) - set(headline(SUMMARY)) == {"per_ticker", "calibration"}


# ------------------------------------------------------------------------------------------ end to end


@dataclass
class Live:
    settings: Settings
    base: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("evaluate")
    procs: list[Proc] = []
    try:
        redis_port = free_port()  # a private Redis: every shared DB number is taken by another suite
        procs.append(start_redis(redis_port, tmp / "redis"))
        settings = make_settings(tmp / "var", 0, 1, redis_url=f"redis://127.0.0.1:{redis_port}/0")
        port = free_port()
        procs += start_all(
            lambda: start_worker(settings, "training,ingest", "evaluate", **SMALL_EVALUATION),
            # Forecasts from another process than the evaluation's, its models kept warm between them.
            lambda: start_worker(settings, "inference", "serve", STOCKQ_MODEL_ALIAS_CHECK_S=ALIAS_CHECK_S),
            lambda: start_gunicorn(settings, port),
        )
        base = f"http://127.0.0.1:{port}"
        ingest = requests.post(f"{base}/ingest", json={"tickers": ["^GSPC", *TICKERS]}, timeout=10)
        assert wait(base, ingest.json()["job_id"], 300)["status"] == "succeeded"
        yield Live(settings, base, settings_env(settings, STOCKQ_API_URL=base, COLUMNS="200"))
    finally:
        for proc in reversed(procs):
            proc.stop()


def wait(base: str, job_id: str, timeout_s: float, seen: list[dict] | None = None) -> dict[str, Any]:
    """Poll until the job finishes; every progress it showed on the way lands in `seen`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = requests.get(f"{base}/status/{job_id}", timeout=5).json()
        if seen is not None and job.get("progress") and job["progress"] not in seen:
            seen.append(job["progress"])
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s}s")


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


@pytest.mark.slow
def test_an_evaluation_reports_each_origin_and_ends_with_its_headline(live: Live) -> None:
    r = requests.post(f"{live.base}/evaluate", json={"tickers": TICKERS, "first_year": 2021}, timeout=10)
    assert r.status_code == 202 and r.headers["Location"] == f"/status/{r.json()['job_id']}"
    seen: list[dict] = []
    job = wait(live.base, r.json()["job_id"], 600, seen)
    assert job["status"] == "succeeded", job
    # Burn-in, 2021 and 2022: three refits, each shown while it runs with the epochs of its fit (a poll may
    # miss some), the bar counting the origins done; then the baselines.
    origins = [p for p in seen if p["phase"] == "walk_forward"]
    steps = [p["step"] for p in origins]
    assert len(set(steps)) >= 2 and steps == sorted(steps) and set(steps) <= {0, 1, 2}, seen
    assert {(p["steps"], p["phase_index"], p["phases"]) for p in origins} == {(3, 1, 2)}, seen
    assert all(p["label"].startswith(f"walk-forward origin {p['step'] + 1}/3") for p in origins), seen
    # Each origin's fit reports its epochs too (one epoch here: a poll may miss them all; the callbacks
    # are tested in tests/test_progress.py).
    for p in origins:
        if "epoch" in p:
            assert p["label"] == f"walk-forward origin {p['step'] + 1}/3 · epoch {p['epoch']}", p
    assert (job["progress"]["phase"], job["progress"]["phase_index"]) == ("baselines", 2), job["progress"]
    result = job["result"]
    assert "per_ticker" not in result and "calibration" not in result
    assert result["tickers"] == sorted(["^GSPC", *TICKERS]) and result["counts"]["tickers"] == 4
    assert result["period"][0] >= "2021-01-01" and result["period"][1] <= "2022-12-28"
    assert result["run_id"] and result["device"] == "cpu" and result["seconds"] > 0
    verdict = result["verdict"]
    assert isinstance(verdict["text"], str) and isinstance(verdict["measurable"], bool)
    assert all(finite(verdict[k]) for k in ("skill", "lo", "hi", "dm_p_value"))
    assert verdict["lo"] <= verdict["skill"] <= verdict["hi"] and verdict["measurable"] == (verdict["lo"] > 0)
    pooled = result["pooled"]
    assert set(pooled["skill"]) == set(FORECASTERS)
    for name, s in pooled["skill"].items():
        assert all(finite(s[k]) for k in ("skill", "lo", "hi", "dm_p_value")), (name, s)
        assert s["lo"] <= s["skill"] <= s["hi"] and 0 <= s["dm_p_value"] <= 1, (name, s)
    for name in ("global", *FORECASTERS):
        assert finite(pooled["pinball"][name]) and 0 <= pooled["coverage_80"][name] <= 1, name


@pytest.mark.slow
def test_the_cli_prints_the_verdict_each_baseline_and_where_the_losses_are(live: Live) -> None:
    ran = CliRunner().invoke(main, ["evaluate", *TICKERS, "--first-year", "2022"], env=live.env)
    assert ran.exit_code == 0, ran.output
    job_id = ran.stderr.split("job ", 1)[1].split()[0]  # narration on stderr, the report on stdout
    job = requests.get(f"{live.base}/status/{job_id}", timeout=5).json()
    assert job["params"] == {"tickers": TICKERS, "universe": None, "first_year": 2022, "refit_months": None}
    result = job["result"]
    assert result["verdict"]["text"] in ran.stdout
    assert f"losses.parquet in MLflow run {result['run_id']}" in ran.stdout
    rows = {line.split("│")[1].strip(): line for line in ran.stdout.splitlines() if line.count("│") > 3}
    zero = result["pooled"]["skill"]["zero_ewma"]
    assert set(FORECASTERS) | {"global"} <= set(rows)
    assert f"{zero['skill']:+.1%} ({zero['lo']:+.1%} to {zero['hi']:+.1%})" in rows["zero_ewma"]
    assert f"{zero['dm_p_value']:.3f}" in rows["zero_ewma"]


def forecast(base: str) -> dict[str, Any]:
    r = requests.post(f"{base}/predict-child?wait=10", json={"ticker": "^GSPC"}, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    return dict(r.json()["result"])


@pytest.mark.slow
def test_a_new_evaluation_is_served_by_a_warm_worker_from_its_next_forecast(live: Live) -> None:
    """The serving worker holds the parent (its card and calibration) in memory and its forecast in the
    prediction cache; an evaluation recorded by another worker reaches both."""
    trained = requests.post(f"{live.base}/train", json={"ticker": "^GSPC", "epochs": 1}, timeout=10)
    assert wait(live.base, trained.json()["job_id"], 300)["status"] == "succeeded"
    first, again = forecast(live.base), forecast(live.base)
    assert first["cached"] is False and again["cached"] is True
    assert again["band"]["calibration"] == first["band"]["calibration"]

    body = {"tickers": TICKERS, "first_year": 2022}
    job = wait(live.base, requests.post(f"{live.base}/evaluate", json=body, timeout=10).json()["job_id"], 600)
    assert job["status"] == "succeeded", job
    time.sleep(2 * float(ALIAS_CHECK_S))
    after, run_id = forecast(live.base), job["result"]["run_id"]
    assert after["cached"] is False and after["band"]["calibration"] == f"evaluation {run_id}"
    assert after["model"] == first["model"] and after["as_of"] == first["as_of"]
    card = requests.get(f"{live.base}/models/stockq-parent", timeout=10).json()
    assert card["verdict"]["evaluation_run_id"] == run_id


@pytest.mark.slow
def test_a_running_evaluation_is_cancelled_between_origins(live: Live) -> None:
    # A refit every 3 months from 2015: about thirty origins, far more than the cancel needs.
    body = {"tickers": TICKERS, "first_year": 2015, "refit_months": 3}
    job_id = requests.post(f"{live.base}/evaluate", json=body, timeout=10).json()["job_id"]

    def progress() -> dict[str, Any]:
        return requests.get(f"{live.base}/status/{job_id}", timeout=5).json().get("progress") or {}

    deadline = time.monotonic() + 300
    while not progress().get("step") and time.monotonic() < deadline:
        time.sleep(0.1)
    r = requests.delete(f"{live.base}/jobs/{job_id}", timeout=5)
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    job = wait(live.base, job_id, 300)
    assert job["status"] == "cancelled" and job["error"]["code"] == "cancelled", job
    assert job["result"] is None and job["progress"]["step"] < job["progress"]["steps"]
    assert requests.delete(f"{live.base}/jobs/{job_id}", timeout=5).status_code == 409
