"""What `stockq` prints for people: forecasts, model cards, evaluations, skill lines, ingests and where to
look next."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def not_evaluated_text() -> str:
    """What a card says before any evaluation ran. Imported here, not at the top: importing the webapp
    package builds the API app (seconds), which only the commands that print a card should pay for."""
    from webapp.evaluation_cost import not_evaluated_text as text

    return text()


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
    """The card's verdict (skill over zero+EWMA with its 90 % interval, from the latest evaluation of its
    recipe), or that none ran yet and what one costs."""
    return not_evaluated_text() if card.get("evaluation") is None else str(card["verdict"]["text"])


def model_line(card: dict[str, Any]) -> str:
    champion = " (champion)" if card.get("champion") else " (not the champion)"
    return f"{card['name']} v{card['version']}{champion}, trained until {card.get('trained_until', 'n/a')}"


def quoted_evaluation(card: dict[str, Any]) -> str:
    """Which evaluation the card quotes (its date and period), or that none ran yet and what one costs."""
    evaluation = card.get("evaluation")
    if evaluation is None:
        return not_evaluated_text()
    first, last = evaluation["period"]
    return (f"quotes the evaluation of {evaluation['evaluated_at'][:10]}: decisions {first} to {last}, "
            f"{len(evaluation['tickers'])} tickers (MLflow run {evaluation['run_id']})")  # fmt: skip


def evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    """When, over what and where an evaluation ran, how its tickers fared one by one, and where its
    per-window losses are."""
    first, last = evaluation["period"]
    counts = evaluation["counts"]
    return [
        f"evaluation of {evaluation['evaluated_at'][:10]}: {evaluation['recipe']} recipe "
        f"({evaluation['universe']} universe), decisions {first} to {last} "
        f"({evaluation['n_decisions']} days), {len(evaluation['tickers'])} tickers, "
        f"{evaluation['origins']} refits, {evaluation['seconds'] / 60:.1f} min on {evaluation['device']}",
        f"per ticker: {counts['skill_over_reference']} of {counts['tickers']} show skill over zero+EWMA, "
        f"{counts['coverage_80_in_75_85']} keep 80 % band coverage within 75-85 %",
        f"losses: {evaluation['losses_artifact']} in MLflow run {evaluation['run_id']}",
    ]


def evaluation_table(evaluation: dict[str, Any]) -> Table:
    """Pooled over every ticker: each forecaster's loss and coverage, and the evaluated recipe's skill
    over it with its 90 % interval and the Diebold-Mariano p-value."""
    pooled = evaluation["pooled"]
    recipe = evaluation["recipe"]
    table = Table("forecaster", "pinball", "coverage 80", f"{recipe}'s skill over it (90 % interval)", "DM p")
    for name in (recipe, evaluation["reference"], *evaluation["baselines"]):
        s = pooled["skill"].get(name)
        skill = skill_text(s) if s else ""
        table.add_row(
            name, f"{pooled['pinball'][name]:.5f}", f"{pooled['coverage_80'][name]:.1%}", skill,
            f"{s['dm_p_value']:.3f}" if s else "",
        )  # fmt: skip
    return table


def print_evaluation(console: Console, evaluation: dict[str, Any]) -> None:
    console.print(f"[bold]{evaluation['verdict']['text']}[/bold]", highlight=False)
    for line in evaluation_lines(evaluation):
        console.print(line, highlight=False)
    console.print(evaluation_table(evaluation))


def print_card(console: Console, card: dict[str, Any]) -> None:
    console.print(f"[bold]{model_line(card)}[/bold]", highlight=False)
    evaluation = card.get("evaluation")
    if evaluation is None:
        console.print(not_evaluated_text(), highlight=False)
    else:
        print_evaluation(console, evaluation)
    decision = card.get("decision") or {}
    console.print(f"decision: {decision.get('text') or card.get('champion_decision', 'n/a')}")


def skill_text(skill: dict[str, Any]) -> str:
    """A skill with its 90 % interval: `+3.1% (-0.5% to +6.8%)`."""
    return f"{skill['skill']:+.1%} ({skill['lo']:+.1%} to {skill['hi']:+.1%})"


def models_table(models: list[dict[str, Any]]) -> Table:
    """Every model; `skill`: the champion's skill over zero+EWMA with its 90 % interval, or — when its
    recipe was not evaluated yet."""
    table = Table("model", "champion", "trained until", "kind", "skill (90 % interval)")
    for m in models:
        skill = skill_text(m["skill"]) if m.get("skill") else "—"
        champion, until = m["champion_version"] or "—", m["trained_until"] or "—"
        table.add_row(m["name"], champion, until, m["kind"] or "", skill)
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
