"""The four specialists' prompts. Every user prompt carries the real numbers it may talk about."""

from __future__ import annotations

from typing import Any

from agent.report import backtest_line, forecast_table, news_list, technicals_table
from agent.state import ScoredNews

PERFORMANCE_ANALYST = "Performance Analyst"
MARKET_EXPERT = "Market Expert"
REPORT_GENERATOR = "Report Generator"
CRITIC = "Critic"
ROLES = (PERFORMANCE_ANALYST, MARKET_EXPERT, REPORT_GENERATOR, CRITIC)

_HOUSE_RULES = (
    "Use only the numbers given to you; never invent prices, dates or statistics. "
    "This is model output for research, not investment advice."
)

PERFORMANCE_SYSTEM = (
    f"You are the {PERFORMANCE_ANALYST} of an equity research desk. From the technical indicators, the "
    "model's 7-day quantile forecast and the model's backtest, write one tight paragraph: the trend, the "
    "momentum, what the forecast's median and 80% band imply, and how much the backtest lets us trust it. "
    + _HOUSE_RULES
)
MARKET_SYSTEM = (
    f"You are the {MARKET_EXPERT} of an equity research desk. From the headlines and their VADER sentiment "
    "scores, write one short paragraph on the news flow and the mood it sets. " + _HOUSE_RULES
)
REPORT_SYSTEM = (
    f"You are the {REPORT_GENERATOR} of an equity research desk. Combine the analysts' notes into the "
    "sections of a report that answers the question. Tables are added for you; write prose only. Choose a "
    "stance (bullish, neutral or bearish) consistent with the sign of the 7-day median forecast, and a "
    "confidence in [0, 1] no higher than the cap the backtest allows. " + _HOUSE_RULES
)
CRITIC_SYSTEM = (
    f"You are the {CRITIC} of an equity research desk. Check the report against the numbers: a stance that "
    "contradicts the median forecast, a confidence the backtest does not support, a number that is not in "
    "the data, a claim the news does not back. Approve only a consistent report; otherwise list each issue "
    "concretely."
)


def facts_brief(facts: dict[str, Any], forecast: dict[str, Any]) -> str:
    model = facts["model"]
    seven = facts["seven_day"]
    low, high = seven["band_pct"]
    return "\n".join(
        [
            f"Ticker: {facts['ticker']}. Data as of {facts['as_of']} (source: {facts['data_source']}). "
            f"Last close: {facts['last_close']:.2f}.",
            f"Forecast by model {model['name']} v{model['version']}, price quantiles per trading day:",
            forecast_table(forecast),
            f"7-day median change: {seven['return_p50_pct']:+.2f}% (80% band {low:+.2f}% to {high:+.2f}%).",
            f"Trend: {facts['trend']} (relative to the 20- and 50-day averages).",
            technicals_table(facts),
            f"Backtest on held-out data: {backtest_line(facts)}.",
            f"Stance from the numbers alone: {facts['stance']} (confidence {facts['confidence']:.2f}; "
            f"confidence cap from the backtest: {facts['confidence_cap']:.2f}).",
        ]
    )


def performance_prompt(question: str, facts: dict[str, Any], forecast: dict[str, Any]) -> str:
    return f"Question: {question}\n\n{facts_brief(facts, forecast)}"


def market_prompt(question: str, ticker: str, items: list[ScoredNews]) -> str:
    headlines = news_list(items)
    return f"Question: {question}\n\nTicker: {ticker}. Headlines with VADER compound sentiment:\n{headlines}"


def report_prompt(
    question: str,
    facts: dict[str, Any],
    forecast: dict[str, Any],
    performance: str,
    market: str,
    feedback: list[str],
) -> str:
    parts = [
        f"Question: {question}",
        facts_brief(facts, forecast),
        f"{PERFORMANCE_ANALYST}'s note:\n{performance}",
        f"{MARKET_EXPERT}'s note:\n{market}",
    ]
    if feedback:
        issues = "\n".join(f"- {issue}" for issue in feedback)
        parts.append(f"The {CRITIC} rejected your previous draft. Fix every issue:\n{issues}")
    return "\n\n".join(parts)


def critic_prompt(report_markdown: str, facts: dict[str, Any], forecast: dict[str, Any]) -> str:
    return f"The numbers:\n{facts_brief(facts, forecast)}\n\nThe report:\n{report_markdown}"
