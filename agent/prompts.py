"""The four specialists' prompts. Every user prompt carries the real numbers it may talk about."""

from __future__ import annotations

from typing import Any

from agent.report import forecast_table, model_line, news_list, technicals_table
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

# The one fact about the model that every writer must hold on to.
_THE_MODEL = (
    "The forecasting model is volatility-scaled: its median is zero by design, so its forecast is the 80% "
    "band (how far the price may move), never a direction; a direction can only come from the technicals. "
)

PERFORMANCE_SYSTEM = (
    f"You are the {PERFORMANCE_ANALYST} of an equity research desk. From the technical indicators, the "
    "model's 7-day quantile forecast and the model's evaluation, write one tight paragraph: the trend, the "
    "momentum, the range the forecast's 80% band gives, and how far the evaluation lets us trust that band. "
    + _THE_MODEL
    + _HOUSE_RULES
)
MARKET_SYSTEM = (
    f"You are the {MARKET_EXPERT} of an equity research desk. From the headlines and their VADER sentiment "
    "scores, write one short paragraph on the news flow and the mood it sets. " + _HOUSE_RULES
)
REPORT_SYSTEM = (
    f"You are the {REPORT_GENERATOR} of an equity research desk. Combine the analysts' notes into the "
    "sections of a report that answers the question. Tables are added for you; write prose only. "
    + _THE_MODEL
    + "Choose a stance (bullish, neutral or bearish) consistent with the trend of the close against its "
    "moving averages, and a confidence in [0, 1] no higher than the cap the model's evaluation allows. "
    + _HOUSE_RULES
)
CRITIC_SYSTEM = (
    f"You are the {CRITIC} of an equity research desk. Check the report against the numbers: a stance that "
    "contradicts the trend, a direction credited to the model's forecast (its median is zero by design), a "
    "confidence the evaluation does not support, a number that is not in the data, a claim the news does "
    "not back. Approve only a consistent report; otherwise list each issue concretely."
)


def facts_brief(facts: dict[str, Any], forecast: dict[str, Any]) -> str:
    model = facts["model"]
    seven = facts["seven_day"]
    low, high = seven["band_pct"]
    return "\n".join(
        [
            f"Ticker: {facts['ticker']}. Data as of {facts['as_of']} (source: {facts['data_source']}). "
            f"Last close: {facts['last_close']:.2f}.",
            f"Forecast by model {model['name']} v{model['version']}. {model_line(facts)}. "
            "Price quantiles per trading day:",
            forecast_table(forecast),
            f"7-day 80% band: {low:+.2f}% to {high:+.2f}% (median {seven['return_p50_pct']:+.2f}%).",
            f"Trend: {facts['trend']} (the close against its 20- and 50-day averages; the only source of a "
            "direction).",
            technicals_table(facts),
            f"Model evaluation: {facts['evaluation']['text']}.",
            f"Stance from the numbers alone: {facts['stance']} (confidence {facts['confidence']:.2f}; "
            f"confidence cap from the evaluation: {facts['confidence_cap']:.2f}).",
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
