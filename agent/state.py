"""What flows through the graph, and the schemas the LLM must answer in."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import BaseModel, Field

Stance = Literal["bullish", "neutral", "bearish"]


class NewsItem(TypedDict):
    title: str
    publisher: str | None
    url: str | None
    published: str | None


class ScoredNews(NewsItem):
    sentiment: float  # VADER compound score in [-1, 1]


class PerformanceAnalysis(TypedDict):
    facts: dict[str, Any]  # agent.numbers.performance_facts: every number the prose may cite
    text: str


class MarketAnalysis(TypedDict):
    items: list[ScoredNews]
    mean_sentiment: float | None
    text: str


class ReportDraft(BaseModel):
    """The Report Generator's structured answer; the markdown around it is rendered from the numbers."""

    summary: str = Field(description="Two to four sentences answering the question.")
    technicals: str = Field(description="Trend, momentum and what the forecast band implies.")
    news: str = Field(description="What the headlines and their sentiment add.")
    risks: str = Field(description="The main risks to the stance, including the model's own limits.")
    stance: Stance
    confidence: float = Field(ge=0.0, le=1.0, description="Confidence in the stance, 0 to 1.")
    rationale: str = Field(description="One or two sentences on why this stance and confidence.")


class CriticVerdict(BaseModel):
    approved: bool
    issues: list[str] = Field(description="Each concrete inconsistency between the report and the numbers.")


class Draft(TypedDict):
    report: ReportDraft
    markdown: str


class AgentState(TypedDict, total=False):
    ticker: str
    question: str
    forecast: dict[str, Any]
    snapshot: dict[str, float | None]
    model_card: dict[str, Any]
    news: list[NewsItem]
    news_note: str | None
    performance: PerformanceAnalysis
    market: MarketAnalysis
    draft: Draft
    critique: CriticVerdict
    revisions: int
