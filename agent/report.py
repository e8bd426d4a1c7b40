"""Markdown rendered from the numbers: the tables the LLM never writes, and the report around its prose."""

from __future__ import annotations

from typing import Any

from agent.state import ReportDraft, ScoredNews


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def forecast_table(forecast: dict[str, Any]) -> str:
    """Price quantiles per day and the 80 % band as returns from the last close: the band is the forecast
    (how far the price may move), the median stays at the last close by design."""
    rows = [
        "| Day | Date | p10 | p50 | p90 | 80% band |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    last = forecast["last_close"]
    for step in forecast["forecast"]:
        low, high = (step[q] / last * 100.0 - 100.0 for q in ("p10", "p90"))
        rows.append(
            f"| {step['day']} | {step['date']} | {step['p10']:.2f} | {step['p50']:.2f} | {step['p90']:.2f} "
            f"| {low:+.2f}% to {high:+.2f}% |"
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


def model_line(facts: dict[str, Any]) -> str:
    """What kind of forecast this is, so that no reader takes the median for a view."""
    median, sigma = facts["seven_day"]["return_p50_pct"], facts["daily_sigma_pct"]
    return (
        "The model is a volatility-scaled quantile forecaster: its median is zero by design "
        f"({median:+.2f}% at 7 days after calibration), so it forecasts how far the price may move, not "
        f"which way, from a daily volatility estimate of {sigma:.2f}%"
    )


def news_list(items: list[ScoredNews]) -> str:
    lines = []
    for item in items:
        title = f"[{item['title']}]({item['url']})" if item["url"] else item["title"]
        source = ", ".join(x for x in (item["publisher"], (item["published"] or "")[:10]) if x)
        lines.append(f"- {title}{f' ({source})' if source else ''} · sentiment {item['sentiment']:+.2f}")
    return "\n".join(lines)


def question_line(question: str) -> str:
    return f"> **Question:** {question}"


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
    kind = ", ".join(str(x) for x in (model.get("kind"), model.get("strategy")) if x) or "n/a"
    sections = [
        f"# {facts['ticker']}: analyst report",
        question_line(question),
        f"*Data as of {facts['as_of']} (source: {facts['data_source'] or 'unknown'}); model {model['name']} "
        f"v{model['version']} ({kind}). {byline}*",
        f"## Summary\n\n{draft.summary}",
        f"## Forecast\n\nLast close {facts['last_close']:.2f} on {facts['as_of']}; 80% band from p10 to p90. "
        f"{model_line(facts)}.\n\n{forecast_table(forecast)}\n\n"
        f"Evaluation: {facts['evaluation']['text']}.",
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
