"""`stockq demo`: the whole story on one machine, narrated: what started, where the data came from, the
models and the evaluation their cards quote (or that none ran yet, and how long `stockq evaluate` takes),
the forecast, the chart saved under var/ and the console's address."""

from __future__ import annotations

import time
from typing import Any

from stockq.cli.api import Api
from stockq.cli.data_note import data_note_soon
from stockq.cli.follow import submit_and_follow
from stockq.cli.output import UNREACHABLE, CliError, Output
from stockq.cli.render import forecast_table, ingest_lines, links, model_line, quoted_evaluation
from stockq.cli.stack import WORKER_GROUPS, Stack
from stockq.settings import Settings


def chart_file(settings: Settings, ticker: str) -> Any:
    return settings.var_path / "charts" / f"{ticker.replace('^', '')}.png"


def started_lines(stack: Stack) -> list[str]:
    names = set(stack.procs)
    redis = (
        f"Redis {stack.settings.redis_url} (started here, data under {stack.settings.var_path / 'redis'})"
        if "redis" in names
        else f"Redis {stack.settings.redis_url} (already running, used as is)"
    )
    workers = ", ".join(f"{queue}×{n}" for queue, n in WORKER_GROUPS.items())
    return [
        redis,
        "API under gunicorn (2 processes × 8 threads)",
        f"Celery workers, one per queue: {workers} pool processes",
        "Flower (queue monitor) and the Prometheus exporter",
    ]


def run_demo(epochs: int, out: Output) -> None:
    settings = Settings()
    stack = Stack(settings, settings.var_path / "logs")
    api = Api(settings.model_copy(update={"api_url": f"http://127.0.0.1:{settings.api_port}"}))
    say = out.story.print
    note = data_note_soon(settings)
    summary: dict[str, Any] = {"models": []}
    try:
        began = time.monotonic()
        stack.start()
        summary["urls"] = stack.urls()
        say("[bold]started[/bold]")
        for line in started_lines(stack) + stack.banner():
            say(f"  {line}", highlight=False)
        say("  waiting for every queue's worker (a first start imports torch and MLflow: a minute or two)")
        # A fresh or busy machine starts the workers slowly; the demo would rather wait than give up.
        if not stack.wait_ready(timeout_s=300):
            raise CliError(UNREACHABLE, "not_ready", f"the stack did not become ready; see {stack.log_dir}")
        waited = time.monotonic() - began
        say(f"  ready after {waited:.0f} s: every queue has a worker (logs in {stack.log_dir})")
        summary["data"] = note.result()
        say(f"[bold]{summary['data']['text']}[/bold]", highlight=False)

        say("[bold]ingest ^GSPC AAPL[/bold]: fetch, features, Feast offline and online stores")
        ingested = submit_and_follow(api, "/ingest", {"tickers": ["^GSPC", "AAPL"]}, out)["result"]
        summary["ingest"] = ingested
        for line in ingest_lines(ingested):
            say(f"  {line}", highlight=False)

        for label, body in (
            (f"train the parent ^GSPC ({epochs} epochs)", {"ticker": "^GSPC", "epochs": epochs}),
            (f"train the child AAPL from it (fine_tune, {epochs} epochs)",
             {"ticker": "AAPL", "strategy": "fine_tune", "epochs": epochs}),
        ):  # fmt: skip
            say(f"[bold]{label}[/bold]: train, register, decide the champion")
            result = submit_and_follow(api, "/train", body, out)["result"]
            card = api.card(result["name"], result["version"])
            summary["models"].append(card)
            say(f"  {model_line(card)}", highlight=False)
            # The evaluation is a job of its own (minutes to an hour): the demo quotes the latest one.
            say(f"  {quoted_evaluation(card)}", highlight=False)
            if card.get("evaluation") is not None:
                say(f"  {card['verdict']['text']}", highlight=False)

        say("[bold]predict AAPL[/bold]: 7 trading days, median and 80 % band")
        forecast = submit_and_follow(api, "/predict-child", {"ticker": "AAPL"}, out)["result"]
        summary["forecast"] = forecast
        out.story.print(forecast_table(forecast))
        saved = api.save_chart("AAPL", chart_file(settings, "AAPL"))
        summary["chart_file"] = str(saved)
        found = links(api.base, "AAPL")
        summary["links"] = found
        say(f"[bold]chart[/bold]    {saved} (the API serves it at {found['chart']})", highlight=False)
        say(f"[bold]console[/bold]  {found['console']} — jobs, charts and model cards in the browser "
            "while `stockq up` runs (this demo stops its stack now)", highlight=False)  # fmt: skip
    finally:
        stack.stop()
    out.emit(summary)
