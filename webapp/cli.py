"""`stockq`: run the local stack, submit jobs over the REST API and follow them."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import click
import requests
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ml.settings import Settings

console = Console()
FINISHED = {"succeeded", "failed", "cancelled"}


class Api:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.api_url.rstrip("/")
        self.session = requests.Session()
        if settings.api_key.get_secret_value():
            self.session.headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(method, self.base + path, timeout=30, **kwargs)
        except requests.ConnectionError:
            raise click.ClickException(
                f"cannot reach the API at {self.base} (is `stockq up` running?)"
            ) from None
        body = response.json() if response.content else {}
        if response.status_code >= 400:
            error = body.get("error", {})
            raise click.ClickException(f"{response.status_code} {error.get('code')}: {error.get('message')}")
        return body


def follow(api: Api, job_id: str) -> dict[str, Any]:
    """Poll the job with a live progress bar until it finishes."""
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(job_id[:8], total=None, detail="queued")
        while True:
            job = api.call("GET", f"/status/{job_id}")
            prog = job.get("progress") or {}
            detail = job["status"] + (f" · {job['stage']}" if job.get("stage") else "")
            if "epoch" in prog:
                detail += f" · epoch {prog['epoch']}/{prog['epochs']} loss {prog['loss']:.4f}"
                progress.update(task, total=prog["epochs"], completed=prog["epoch"])
            progress.update(task, detail=detail)
            if job["status"] in FINISHED:
                return job
            time.sleep(0.5)


def print_forecast(result: dict[str, Any]) -> None:
    model = result["model"]
    table = Table(title=f"{result['ticker']} as of {result['as_of']} · {model['name']} v{model['version']}")
    for column in ("day", "date", "p10", "median", "p90"):
        table.add_column(column, justify="right")
    for row in result["forecast"]:
        table.add_row(
            str(row["day"]), row["date"], f"{row['p10']:.2f}", f"{row['p50']:.2f}", f"{row['p90']:.2f}"
        )
    console.print(table)


def finish(job: dict[str, Any]) -> None:
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        raise click.ClickException(
            f"job {job['id']} {job['status']}: {error.get('code')}: {error.get('message')}"
        )


@click.group()
def main() -> None:
    """stockq: distributed stock forecasting jobs."""


@main.command()
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines of the API and workers (default: STOCKQ_LOG_FORMAT, else text).",
)
@click.option("--mlflow-ui", is_flag=True, help="Also serve `mlflow ui` on loopback against the same store.")
@click.option("--beat", is_flag=True, help="Also run the scheduler (daily ingest, nightly retrain).")
def up(log_format: str | None, mlflow_ui: bool, beat: bool) -> None:
    """Run Redis (if needed), the API, workers for every queue, Flower and the exporter until Ctrl-C."""
    import os

    from webapp.stack import Stack
    from workers import logs

    if log_format:
        os.environ["STOCKQ_LOG_FORMAT"] = log_format  # the children read it too
    settings = Settings()
    # The supervisor says on stderr which child died, when it comes back and which one it gave up on.
    logs.configure(settings.log_format)
    stack = Stack(settings, settings.var_path / "logs", mlflow_ui=mlflow_ui, beat=beat)

    def _stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        for name, url in stack.urls().items():
            console.print(f"{name:<9}{url}")
        console.print(f"logs     {stack.log_dir}")
        if stack.generated_flower_auth is not None:
            console.print(f"Flower login (shown once, kept in {stack.generated_flower_auth}): "
                          f"{stack.generated_flower_auth.read_text()}")  # fmt: skip
        if stack.wait_ready():
            console.print("[green]ready[/green]: every queue has a worker")
        stack.supervise()
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        stack.stop()


@main.command()
@click.option("--epochs", default=3, show_default=True)
def demo(epochs: int) -> None:
    """Start the stack, ingest, train ^GSPC and AAPL, predict AAPL, print the forecast, stop."""
    from webapp.stack import Stack

    settings = Settings()
    stack = Stack(settings, settings.var_path / "logs")
    api = Api(settings.model_copy(update={"api_url": f"http://127.0.0.1:{settings.api_port}"}))
    try:
        stack.start()
        if not stack.wait_ready():
            raise click.ClickException(f"the stack did not become ready; see {stack.log_dir}")
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("ingest ^GSPC AAPL", "/ingest", {"tickers": ["^GSPC", "AAPL"]}),
            ("train parent ^GSPC", "/train", {"ticker": "^GSPC", "epochs": epochs}),
            ("train child AAPL", "/train", {"ticker": "AAPL", "strategy": "fine_tune", "epochs": epochs}),
            ("predict AAPL", "/predict-child", {"ticker": "AAPL"}),
        ]
        for label, path, body in steps:
            console.print(f"[bold]{label}[/bold]")
            job = follow(api, api.call("POST", path, json=body)["job_id"])
            finish(job)
        print_forecast(job["result"])
    finally:
        stack.stop()


def _submit_and_follow(path: str, body: dict[str, Any], wait: bool) -> dict[str, Any]:
    api = Api(Settings())
    accepted = api.call("POST", path, json=body)
    console.print(f"job {accepted['job_id']}")
    if not wait:
        return accepted
    job = follow(api, accepted["job_id"])
    finish(job)
    return job


@main.command()
@click.argument("ticker")
@click.option("--strategy", type=click.Choice(["freeze", "fine_tune", "scratch"]), default="fine_tune")
@click.option("--epochs", type=int, default=None)
@click.option("--no-wait", is_flag=True, help="Submit and return the job id.")
def train(ticker: str, strategy: str, epochs: int | None, no_wait: bool) -> None:
    """Train a model (^GSPC: the parent)."""
    job = _submit_and_follow(
        "/train", {"ticker": ticker, "strategy": strategy, "epochs": epochs}, not no_wait
    )
    if not no_wait:
        console.print_json(json.dumps(job["result"]))


@main.command()
@click.argument("ticker")
@click.option("--model", type=click.Choice(["auto", "child", "parent"]), default="auto")
def predict(ticker: str, model: str) -> None:
    """Forecast the next 7 trading days."""
    print_forecast(_submit_and_follow("/predict-child", {"ticker": ticker, "model": model}, True)["result"])


@main.command()
@click.argument("ticker")
@click.option("--question", default=None)
def analyze(ticker: str, question: str | None) -> None:
    """Ask the analyst agent for a report."""
    job = _submit_and_follow("/agent/chat", {"ticker": ticker, "question": question}, True)
    console.print(job["result"]["report_markdown"])


@main.command()
@click.argument("tickers", nargs=-1, required=True)
@click.option("--local", is_flag=True, help="Run in this process instead of as a job.")
def ingest(tickers: tuple[str, ...], local: bool) -> None:
    """Fetch history, compute features and load the feature store."""
    if local:
        from ml.data import make_source
        from ml.feature_store import FeatureStore
        from ml.pipeline import ingest as run_ingest
        from ml.settings import configure_process_env

        s = Settings()
        configure_process_env(s)
        store = FeatureStore(s.var_path, s.feast_connection_string, window=s.window)
        result = run_ingest(list(tickers), source=make_source(s.data_source, s.var_path), store=store)
    else:
        result = _submit_and_follow("/ingest", {"tickers": list(tickers)}, True)["result"]
    console.print_json(json.dumps(result))


@main.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show a job record."""
    console.print_json(json.dumps(Api(Settings()).call("GET", f"/status/{job_id}")))


@main.command()
@click.option("--status", "status_", default=None)
@click.option("--type", "type_", default=None)
@click.option("--limit", default=20, show_default=True)
def jobs(status_: str | None, type_: str | None, limit: int) -> None:
    """List recent jobs."""
    params = {k: v for k, v in {"status": status_, "type": type_, "limit": limit}.items() if v is not None}
    body = Api(Settings()).call("GET", "/jobs", params=params)
    table = Table("id", "type", "status", "stage", "submitted")
    for job in body["jobs"]:
        submitted = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["submitted_at"]))
        table.add_row(job["id"], job["type"], job["status"], job.get("stage") or "", submitted)
    console.print(table)


@main.command()
@click.argument("name", required=False)
@click.option("--version", type=int, default=None, help="a registered version (default: the champion)")
@click.option("--json", "as_json", is_flag=True, help="print the whole card")
def models(name: str | None, version: int | None, as_json: bool) -> None:
    """List registered models, or show one model's card: skill against the best baseline with its
    interval ("no measurable skill" when it includes zero), calibration, and the champion decision."""
    api = Api(Settings())
    if name is None:
        table = Table("model", "champion", "trained until", "kind")
        for m in api.call("GET", "/models")["models"]:
            table.add_row(m["name"], m["champion_version"] or "—", m["trained_until"] or "—", m["kind"] or "")
        console.print(table)
        return
    card = api.call("GET", f"/models/{name}", params={} if version is None else {"version": version})
    if as_json:
        console.print_json(json.dumps(card))
        return
    console.print(
        f"[bold]{card['name']} v{card['version']}[/bold]" + (" (champion)" if card["champion"] else "")
    )
    console.print(f"trained until {card.get('trained_until', 'n/a')}, evaluated by {card.get('evaluation')}")
    verdict = card.get("verdict")
    if verdict is None:
        console.print("skill: no measurable skill shown (a single holdout, no interval)")
    else:
        bt = card["backtest"]
        console.print(
            f"{len(bt['origins'])} walk-forward origins from {bt['first_origin']}, {bt['n_windows']} windows"
        )
        console.print(f"skill: {verdict['text']}")
        coverage = card["coverage"]
        console.print(f"80% band coverage {coverage['before']:.1%} raw, {coverage['after']:.1%} calibrated")
        table = Table("forecaster", "pinball", "coverage 80")
        for label, m in bt["metrics"].items():
            table.add_row(label, f"{m['pinball']:.5f}", f"{m['coverage_80']:.1%}")
        console.print(table)
    decision = card.get("decision") or {}
    console.print(f"decision: {decision.get('text') or card.get('champion_decision', 'n/a')}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to serve /metrics on")
@click.option("--port", type=int, default=None, help="default: STOCKQ_EXPORTER_PORT (9808)")
def exporter(host: str, port: int | None) -> None:
    """Serve the backend-wide Prometheus figures (queues, workers, jobs, models) until killed."""
    import logging

    from workers.exporter import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(settings.redis_url, settings.tracking_uri, host, port or settings.exporter_port)


if __name__ == "__main__":
    sys.exit(main())
