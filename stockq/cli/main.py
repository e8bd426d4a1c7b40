"""`stockq`: run the local stack, submit jobs over the REST API and follow them.

Output and exit codes: stockq/cli/output.py; the API client: stockq/cli/api.py; following a job:
stockq/cli/follow.py; status/jobs/cancel/retry: stockq/cli/job_commands.py; what people read:
stockq/cli/render.py and stockq/cli/job_view.py; the demo: stockq/cli/demo.py."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from stockq.cli.api import Api
from stockq.cli.follow import submit_and_follow
from stockq.cli.job_commands import JOB_COMMANDS
from stockq.cli.output import EXIT_CODES_HELP, Output, StockqGroup, scripted
from stockq.cli.render import (
    forecast_table,
    ingest_lines,
    links,
    model_line,
    models_table,
    print_card,
    print_evaluation,
    print_links,
    skill_line,
)
from stockq.settings import Settings


@click.group(cls=StockqGroup, epilog=EXIT_CODES_HELP)
def main() -> None:
    """stockq: distributed stock forecasting jobs."""


@main.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines of the API and workers (default: STOCKQ_LOG_FORMAT, else text).",
)
@click.option("--mlflow-ui", is_flag=True, help="Also serve `mlflow ui` on loopback against the same store.")
@click.option("--beat", is_flag=True, help="Also run the scheduler (daily ingest, nightly retrain).")
@scripted
def up(log_format: str | None, mlflow_ui: bool, beat: bool, out: Output) -> None:
    """Run Redis (if needed), the API and its console, workers for every queue, Flower and the exporter
    until Ctrl-C. Prints the URLs and which history the data source serves (--json: one document once
    the stack is ready)."""
    import os

    from stockq.cli.data_note import data_note_soon
    from stockq.cli.stack import Stack
    from workers import logs

    if log_format:
        os.environ["STOCKQ_LOG_FORMAT"] = log_format  # the children read it too
    settings = _checked(Settings())
    # The supervisor says on stderr which child died, when it comes back and which one it gave up on.
    logs.configure(settings.log_format)
    stack = Stack(settings, settings.var_path / "logs", mlflow_ui=mlflow_ui, beat=beat)
    note = data_note_soon(settings)

    def _stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        for line in stack.banner():
            out.out.print(line, highlight=False)
        out.out.print(f"logs     {stack.log_dir}", highlight=False)
        if stack.generated_flower_auth is not None:
            # On stderr under --json: a secret has no place in a document that scripts pass around.
            (out.err if out.as_json else out.out).print(
                f"Flower login (shown once, kept in {stack.generated_flower_auth}): "
                f"{stack.generated_flower_auth.read_text()}", highlight=False)  # fmt: skip
        data = note.result()
        out.out.print(data["text"], highlight=False)
        ready = stack.wait_ready()
        if ready:
            out.out.print("[green]ready[/green]: every queue has a worker")
        out.emit({"urls": stack.urls(), "data": data, "ready": ready, "logs": str(stack.log_dir)})
        sys.stdout.flush()
        stack.supervise()
    except KeyboardInterrupt:
        out.err.print("stopping…")
    finally:
        stack.stop()


@main.command(epilog=EXIT_CODES_HELP)
@click.option("--epochs", default=3, show_default=True)
@scripted
def demo(epochs: int, out: Output) -> None:
    """Start the stack, ingest, train ^GSPC and AAPL, predict AAPL, save the chart under var/, stop;
    narrated (on stderr with --json, which prints one summary document)."""
    from stockq.cli.demo import run_demo

    run_demo(epochs, out)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("ticker")
@click.option("--strategy", type=click.Choice(["freeze", "fine_tune", "scratch"]), default="fine_tune")
@click.option("--epochs", type=int, default=None)
@click.option("--no-wait", is_flag=True, help="Submit and return the job id.")
@scripted
def train(ticker: str, strategy: str, epochs: int | None, no_wait: bool, out: Output) -> None:
    """Train a model (^GSPC: the parent); ends with the verdict of its recipe's latest evaluation and
    where to see the chart."""
    api = Api(Settings())
    body = {"ticker": ticker, "strategy": strategy, "epochs": epochs}
    if no_wait:
        accepted = api.call("POST", "/train", json=body)
        out.out.print(f"job {accepted['job_id']}", highlight=False)
        out.emit({"job": accepted})
        return
    job = submit_and_follow(api, "/train", body, out)
    result = job["result"]
    card = api.card(result["name"], result["version"])
    found = links(api.base, result["ticker"])
    out.out.print(f"[bold]{model_line(card)}[/bold]", highlight=False)
    out.out.print(f"verdict: {skill_line(card)}", highlight=False)
    out.out.print(f"decision: {result['decision']}", highlight=False)
    print_links(out.out, found)
    out.emit({"job": job, "card": card, "links": found})


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("tickers", nargs=-1)
@click.option("--universe", type=click.Choice(["panel", "gspc"]), default=None,
              help="What the model learns from (default: STOCKQ_PARENT_UNIVERSE).")  # fmt: skip
@click.option("--first-year", type=int, default=None, help="The first refit year (default: 2005).")
@click.option("--refit-months", type=int, default=None, help="Months between refits (default: 12).")
@click.option("--no-wait", is_flag=True, help="Submit and return the job id.")
@scripted
def evaluate(
    tickers: tuple[str, ...], universe: str | None, first_year: int | None, refit_months: int | None,
    no_wait: bool, out: Output,
) -> None:  # fmt: skip
    """Evaluate the served recipe walk-forward (default: over every ingested ticker) against zero+EWMA
    and the volatility baselines; prints the verdict, the pooled skill over each with its 90 % interval
    and DM p-value, and the MLflow run holding the per-window losses. Cards quote the latest one."""
    api = Api(Settings())
    body = {"tickers": list(tickers) or None, "universe": universe, "first_year": first_year,
            "refit_months": refit_months}  # fmt: skip
    if no_wait:
        accepted = api.call("POST", "/evaluate", json=body)
        out.out.print(f"job {accepted['job_id']}", highlight=False)
        out.emit({"job": accepted})
        return
    job = submit_and_follow(api, "/evaluate", body, out)
    print_evaluation(out.out, job["result"])
    out.emit({"job": job})


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("ticker")
@click.option("--model", type=click.Choice(["auto", "child", "parent"]), default="auto")
@click.option("--chart", "chart", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also save the forecast chart (PNG) to this file.")  # fmt: skip
@scripted
def predict(ticker: str, model: str, chart: Path | None, out: Output) -> None:
    """Forecast the next 7 trading days; ends with the verdict of the model's latest evaluation and where
    to see the chart."""
    api = Api(Settings())
    job = submit_and_follow(api, "/predict-child", {"ticker": ticker, "model": model}, out)
    result = job["result"]
    card = api.card(result["model"]["name"], str(result["model"]["version"]))
    saved = None if chart is None else str(api.save_chart(result["ticker"], chart))
    found = links(api.base, result["ticker"])
    out.out.print(forecast_table(result))
    if result.get("fallback"):
        out.out.print(f"fallback: {result['fallback']} (no child model for {result['ticker']})")
    out.out.print(f"{model_line(card)}; verdict: {skill_line(card)}", highlight=False)
    print_links(out.out, found, saved)
    out.emit({"job": job, "card": card, "links": found, "chart_file": saved})


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("ticker")
@click.option("--question", default=None)
@scripted
def analyze(ticker: str, question: str | None, out: Output) -> None:
    """Ask the analyst agent for a report."""
    job = submit_and_follow(Api(Settings()), "/agent/chat", {"ticker": ticker, "question": question}, out)
    out.out.print(job["result"]["report_markdown"])
    out.emit({"job": job})


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("tickers", nargs=-1, required=True)
@click.option("--local", is_flag=True, help="Run in this process instead of as a job.")
@scripted
def ingest(tickers: tuple[str, ...], local: bool, out: Output) -> None:
    """Fetch history, compute features and load the feature store; says where each history came from and
    its last date."""
    job = None
    if local:
        from ml.data import make_source
        from ml.features.pipeline import ingest as run_ingest
        from ml.features.store import FeatureStore
        from stockq.settings import configure_process_env

        s = Settings()
        configure_process_env(s)
        store = FeatureStore(s.var_path, s.feast_connection_string, window=s.window)
        result = run_ingest(list(tickers), source=make_source(s.data_source, s.var_path), store=store)
    else:
        job = submit_and_follow(Api(Settings()), "/ingest", {"tickers": list(tickers)}, out)
        result = job["result"]
    for line in ingest_lines(result):
        out.out.print(line, highlight=False)
    out.emit({"result": result, "job": job})


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("name", required=False)
@click.option("--version", type=int, default=None, help="a registered version (default: the champion)")
@scripted
def models(name: str | None, version: int | None, out: Output) -> None:
    """List registered models, or show one model's card: the latest evaluation of its recipe (verdict,
    pooled skill over zero+EWMA and each baseline with intervals and DM p-values, 80 % coverage) or that
    none ran yet, and the champion decision."""
    api = Api(Settings())
    if name is None:
        body = api.call("GET", "/models")
        out.out.print(models_table(body["models"]))
        out.emit(body)
        return
    card = api.card(name, None if version is None else str(version))
    print_card(out.out, card)
    out.emit(card)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to serve /metrics on")
@click.option("--port", type=int, default=None, help="default: STOCKQ_EXPORTER_PORT (9808)")
def exporter(host: str, port: int | None) -> None:
    """Serve the backend-wide Prometheus figures (queues, workers, jobs, models) until killed."""
    import logging

    from workers.exporter import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _checked(Settings())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    amqp = settings.broker if settings.broker_is_amqp else None
    serve(settings.redis_url, settings.tracking_uri, host, port or settings.exporter_port, amqp_url=amqp)


for _command in JOB_COMMANDS:
    main.add_command(_command)


def _checked(settings: Settings) -> Settings:
    """No process starts while a secret is a documented placeholder (stockq/placeholders.py)."""
    from stockq.placeholders import PlaceholderSecret, check

    try:
        check(settings)
    except PlaceholderSecret as exc:
        raise click.ClickException(str(exc)) from None
    return settings


if __name__ == "__main__":
    sys.exit(main())
