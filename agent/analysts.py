"""Who writes each specialist's output: the LLM, or the deterministic analyst that writes from the numbers.

The nodes compute the numbers and call one of these for the words, so both paths share every check.
"""

from __future__ import annotations

from typing import Any, Protocol

from agent.llm import ChatLLM
from agent.news import mood
from agent.numbers import NEUTRAL_EDGE
from agent.prompts import (
    CRITIC_SYSTEM,
    MARKET_SYSTEM,
    PERFORMANCE_SYSTEM,
    REPORT_SYSTEM,
    critic_prompt,
    market_prompt,
    performance_prompt,
    report_prompt,
)
from agent.report import fmt, model_line
from agent.state import CriticVerdict, MarketAnalysis, PerformanceAnalysis, ReportDraft, ScoredNews
from ml.features.store import FROZEN_SOURCES


class Analyst(Protocol):
    model: str | None  # the LLM that writes, None for the deterministic analyst
    byline: str  # how the report tells its reader who wrote it

    def performance(self, question: str, facts: dict[str, Any], forecast: dict[str, Any]) -> str: ...

    def market(
        self, question: str, ticker: str, items: list[ScoredNews], mean: float | None, note: str | None
    ) -> str: ...

    def report(
        self,
        question: str,
        forecast: dict[str, Any],
        performance: PerformanceAnalysis,
        market: MarketAnalysis,
        feedback: list[str],
    ) -> ReportDraft: ...

    def critique(self, markdown: str, facts: dict[str, Any], forecast: dict[str, Any]) -> CriticVerdict: ...


_TREND_WORDS = {
    "up": "up, the close is above its 20- and 50-day averages",
    "down": "down, the close is below its 20- and 50-day averages",
    "mixed": "mixed, the close is between its 20- and 50-day averages",
    "unknown": "unknown (moving averages unavailable)",
}


class DeterministicAnalyst:
    model: str | None = None

    def __init__(self, llm_failure: str | None = None) -> None:
        if llm_failure is None:
            self.byline = "No LLM was used: the deterministic analyst wrote this report from the numbers."
        else:
            self.byline = (
                f"No LLM text is in this report: {llm_failure}, so the deterministic analyst wrote it "
                "from the numbers."
            )

    def performance(self, question: str, facts: dict[str, Any], forecast: dict[str, Any]) -> str:
        seven, nxt = facts["seven_day"], facts["next_day"]
        low, high = seven["band_pct"]
        next_low, next_high = nxt["band_pct"]
        return (
            f"{facts['ticker']} closed at {facts['last_close']:.2f} on {facts['as_of']}. "
            f"Trend: {_TREND_WORDS[facts['trend']]}. Momentum: RSI 14 at {fmt(facts['rsi_14'], '.1f')} "
            f"({facts['rsi_zone']}), MACD {facts['macd']}, "
            f"{fmt(facts['return_5d_pct'], '+.2f', '%')} over 5 days, "
            f"20-day volatility {fmt(facts['volatility_20d_pct'], '.1f', '%')} annualised. "
            f"{model_line(facts)}. Its 80% band for {seven['date']} runs from {seven['p10']:.2f} to "
            f"{seven['p90']:.2f} ({low:+.2f}% to {high:+.2f}%), and for the next day from "
            f"{nxt['p10']:.2f} to {nxt['p90']:.2f} ({next_low:+.2f}% to {next_high:+.2f}%). "
            f"Evaluation: {facts['evaluation']['text']}."
        )

    def market(
        self, question: str, ticker: str, items: list[ScoredNews], mean: float | None, note: str | None
    ) -> str:
        if mean is None:  # no headlines
            return f"No news available for {ticker} ({note or 'no headlines'})."
        best = max(items, key=lambda item: item["sentiment"])
        worst = min(items, key=lambda item: item["sentiment"])
        return (
            f"{len(items)} recent headline(s) on {ticker}; mean VADER sentiment {mean:+.2f} ({mood(mean)}). "
            f"Most positive: {best['title']!r} ({best['sentiment']:+.2f}); "
            f"most negative: {worst['title']!r} ({worst['sentiment']:+.2f})."
        )

    def report(
        self,
        question: str,
        forecast: dict[str, Any],
        performance: PerformanceAnalysis,
        market: MarketAnalysis,
        feedback: list[str],
    ) -> ReportDraft:
        facts = performance["facts"]
        seven = facts["seven_day"]
        low, high = seven["band_pct"]
        news_mood = mood(market["mean_sentiment"])
        evaluation = facts["evaluation"]
        summary = (
            f"On the technicals, {facts['ticker']} is {facts['stance']} over the next 7 trading days: the "
            f"trend is {facts['trend']}, the model's 80% band runs from {seven['p10']:.2f} to "
            f"{seven['p90']:.2f} ({low:+.2f}% to {high:+.2f}%) around a last close of "
            f"{facts['last_close']:.2f}, and the news mood is {news_mood}."
        )
        risks = [
            f"One week in five, the close is expected outside {low:+.2f}% to {high:+.2f}% (the 80% band)."
        ]
        if facts["stance"] != "neutral":
            risks.append("The direction rests on the moving averages alone: the model forecasts none.")
        if not evaluation["evaluated"]:
            risks.append(f"The model's band is unproven: {evaluation['text']}.")
        else:
            if not evaluation["measurable"]:
                risks.append(
                    f"The evaluation does not show the band beating zero+EWMA: {evaluation['basis']}."
                )
            if evaluation["calibration"] not in (None, "well calibrated"):
                held = f"{evaluation['coverage_80']:.0%}"
                risks.append(
                    f"In the evaluation the 80% band held {held} of outcomes ({evaluation['calibration']})."
                )
        if facts["rsi_zone"] in ("overbought", "oversold"):
            risks.append(f"RSI 14 is {facts['rsi_zone']}, which often precedes a reversal.")
        if news_mood == "negative":
            risks.append("The headlines lean negative.")
        if facts["data_source"] in FROZEN_SOURCES:
            risks.append(f"The data is a frozen history ending {facts['as_of']}; it says nothing of today.")
        return ReportDraft(
            summary=summary,
            technicals=performance["text"],
            news=market["text"],
            risks=" ".join(risks),
            stance=facts["stance"],
            confidence=facts["confidence"],
            rationale=(
                f"The close sits {facts['edge']:+.2f} times the 7-day band's half-width beyond the nearer "
                f"of its 20- and 50-day averages (neutral within ±{NEUTRAL_EDGE:.2f}); the model's median "
                "is zero, so the direction is the trend's, and confidence scales its clarity by the "
                f"evaluation's quality ({evaluation['quality']:.2f})."
            ),
        )

    def critique(self, markdown: str, facts: dict[str, Any], forecast: dict[str, Any]) -> CriticVerdict:
        # The numeric checks in the Critic node are the whole review a deterministic report can get.
        return CriticVerdict(approved=True, issues=[])


class LLMAnalyst:
    def __init__(self, llm: ChatLLM) -> None:
        self.llm = llm
        self.model: str | None = llm.model
        self.byline = f"Written with the LLM {llm.model}."
        self._fallback = DeterministicAnalyst()

    def performance(self, question: str, facts: dict[str, Any], forecast: dict[str, Any]) -> str:
        return self.llm.text(PERFORMANCE_SYSTEM, performance_prompt(question, facts, forecast))

    def market(
        self, question: str, ticker: str, items: list[ScoredNews], mean: float | None, note: str | None
    ) -> str:
        if not items:
            # Saying "no news" needs no model call.
            return self._fallback.market(question, ticker, items, mean, note)
        return self.llm.text(MARKET_SYSTEM, market_prompt(question, ticker, items))

    def report(
        self,
        question: str,
        forecast: dict[str, Any],
        performance: PerformanceAnalysis,
        market: MarketAnalysis,
        feedback: list[str],
    ) -> ReportDraft:
        prompt = report_prompt(
            question, performance["facts"], forecast, performance["text"], market["text"], feedback
        )
        return self.llm.structured(REPORT_SYSTEM, prompt, ReportDraft)

    def critique(self, markdown: str, facts: dict[str, Any], forecast: dict[str, Any]) -> CriticVerdict:
        return self.llm.structured(CRITIC_SYSTEM, critic_prompt(markdown, facts, forecast), CriticVerdict)
