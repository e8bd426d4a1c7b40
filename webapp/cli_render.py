"""What `stockq` prints for people: forecasts, model cards, skill lines, ingests and where to look next."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def forecast_table(result: dict[str, Any]) -> Table:
    model = result["model"]
    title = f"{result['ticker']} as of {result['as_of']} · {model['name']} v{model['version']}"
    if result.get("data_source"):
        title += f" · data: {result['data_source']}"
    table = Table(title=title)
    for column in ("day", "date", "p10", "median", "p90"):
        table.add_column(column, justify="right")
    for row in result["forecast"]:
        table.add_row(
            str(row["day"]), row["date"], f"{row['p10']:.2f}", f"{row['p50']:.2f}", f"{row['p90']:.2f}"
        )
    return table


def skill_line(card: dict[str, Any]) -> str:
    """The card's verdict: skill over the best baseline with its 90 % interval, or why there is none."""
    verdict = card.get("verdict")
    if verdict is None:
        # ml.evaluation.compare's NO_SKILL wording; importing it would load torch into the CLI (4 s).
        return "no measurable skill shown (a single holdout, no interval)"
    return str(verdict["text"])


def model_line(card: dict[str, Any]) -> str:
    champion = " (champion)" if card.get("champion") else " (not the champion)"
    return f"{card['name']} v{card['version']}{champion}, trained until {card.get('trained_until', 'n/a')}"


def print_card(console: Console, card: dict[str, Any]) -> None:
    console.print(f"[bold]{model_line(card)}[/bold], evaluated by {card.get('evaluation')}")
    verdict = card.get("verdict")
    if verdict is not None:
        bt = card["backtest"]
        console.print(
            f"{len(bt['origins'])} walk-forward origins from {bt['first_origin']}, {bt['n_windows']} windows"
        )
    console.print(f"skill: {skill_line(card)}")
    if verdict is not None:
        coverage = card["coverage"]
        console.print(f"80% band coverage {coverage['before']:.1%} raw, {coverage['after']:.1%} calibrated")
        table = Table("forecaster", "pinball", "coverage 80")
        for label, m in card["backtest"]["metrics"].items():
            table.add_row(label, f"{m['pinball']:.5f}", f"{m['coverage_80']:.1%}")
        console.print(table)
    decision = card.get("decision") or {}
    console.print(f"decision: {decision.get('text') or card.get('champion_decision', 'n/a')}")


def models_table(models: list[dict[str, Any]]) -> Table:
    table = Table("model", "champion", "trained until", "kind")
    for m in models:
        table.add_row(m["name"], m["champion_version"] or "—", m["trained_until"] or "—", m["kind"] or "")
    return table


def ingest_lines(result: dict[str, dict[str, Any]]) -> list[str]:
    """Per ticker: how many days, from which source, up to which date."""
    lines = []
    for ticker, info in result.items():
        close_only = " (closes only)" if info.get("close_only") else ""
        lines.append(
            f"{ticker:<6} {info['rows']} days from {info['source']}, last {info['as_of']}{close_only}"
        )
    return lines


def links(api_base: str, ticker: str | None) -> dict[str, str]:
    """Where to look next: the console page and, for a ticker, its chart (both take the API key)."""
    found = {"console": f"{api_base}/"}
    if ticker is not None:
        from urllib.parse import quote

        found["chart"] = f"{api_base}/forecast/{quote(ticker, safe='')}.png"
    return found


def print_links(console: Console, found: dict[str, str], chart_file: str | None = None) -> None:
    if chart_file:
        console.print(f"chart    {chart_file}", highlight=False)
    if "chart" in found:
        console.print(f"chart    {found['chart']}  (Authorization: Bearer $STOCKQ_API_KEY)", highlight=False)
    console.print(f"console  {found['console']}  (jobs, charts, model cards in the browser)", highlight=False)
