"""Markdown rendered from the numbers: the tables the LLM never writes, and the report around its prose."""

from __future__ import annotations

from typing import Any

from agent.state import ReportDraft, ScoredNews


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def forecast_table(forecast: dict[str, Any]) -> str:
    rows = [
        "| Day | Date | p10 | p50 | p90 | p50 change |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    last = forecast["last_close"]
    for step in forecast["forecast"]:
        change = (step["p50"] / last - 1.0) * 100.0
        rows.append(
            f"| {step['day']} | {step['date']} | {step['p10']:.2f} | {step['p50']:.2f} | {step['p90']:.2f} "
            f"| {change:+.2f}% |"
        )
    return "\n".join(rows)


def technicals_table(facts: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| RSI 14 | MACD | Close vs SMA 20 | Close vs SMA 50 | 5-day return | 20-day volatility (ann.) |",
            "|---:|---|---:|---:|---:|---:|",
            f"| {fmt(facts['rsi_14'], '.1f')} ({facts['rsi_zone']}) | {facts['macd']} "
            f"| {fmt(facts['sma_20_gap_pct'], '+.2f', '%')} | {fmt(facts['sma_50_gap_pct'], '+.2f', '%')} "
            f"| {fmt(facts['return_5d_pct'], '+.2f', '%')} "
            f"| {fmt(facts['volatility_20d_pct'], '.1f', '%')} |",
        ]
    )


def _share(value: float | None) -> str:
    return fmt(None if value is None else value * 100, ".0f", "%")


def backtest_line(facts: dict[str, Any]) -> str:
    bt = facts["backtest"]
    where = "walk-forward" if bt.get("evaluation") == "walk_forward" else "held-out"
    return (
        f"{bt.get('skill', 'no backtest')} ({where}); direction accuracy {_share(bt['direction_accuracy'])}, "
        f"80% band coverage {_share(bt['coverage_80'])}, "
        f"MAE relative to the zero-return forecast {fmt(bt['mase_persistence'])}"
    )


def news_list(items: list[ScoredNews]) -> str:
    lines = []
    for item in items:
        title = f"[{item['title']}]({item['url']})" if item["url"] else item["title"]
        source = ", ".join(x for x in (item["publisher"], (item["published"] or "")[:10]) if x)
        lines.append(f"- {title}{f' ({source})' if source else ''} · sentiment {item['sentiment']:+.2f}")
    return "\n".join(lines)


def render_report(
    *,
    question: str,
    facts: dict[str, Any],
    forecast: dict[str, Any],
    news: list[ScoredNews],
    draft: ReportDraft,
    byline: str,
) -> str:
    model = facts["model"]
    sections = [
        f"# {facts['ticker']}: analyst report",
        f"> **Question:** {question}",
        f"*Data as of {facts['as_of']} (source: {facts['data_source'] or 'unknown'}); model {model['name']} "
        f"v{model['version']} ({model.get('kind', 'n/a')}, {model.get('strategy', 'n/a')}). {byline}*",
        f"## Summary\n\n{draft.summary}",
        f"## Forecast\n\nLast close {facts['last_close']:.2f} on {facts['as_of']}; "
        f"80% band from p10 to p90.\n\n{forecast_table(forecast)}\n\n"
        f"Backtest: {backtest_line(facts)}.",
        f"## Technicals\n\n{draft.technicals}\n\n{technicals_table(facts)}",
        f"## News\n\n{draft.news}" + (f"\n\n{news_list(news)}" if news else ""),
        f"## Risks\n\n{draft.risks}",
        f"## Stance\n\n**{draft.stance.capitalize()}** (confidence {draft.confidence:.2f}). "
        f"{draft.rationale}",
    ]
    return "\n\n".join(sections) + "\n"


def with_reviewer_notes(markdown: str, issues: list[str]) -> str:
    """The Critic's objections that survived every revision stay visible to the reader."""
    if not issues:
        return markdown
    notes = "\n".join(f"- {issue}" for issue in issues)
    intro = "The Critic's objections still stand after the last revision:"
    return f"{markdown}\n## Reviewer notes\n\n{intro}\n\n{notes}\n"
