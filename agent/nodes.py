"""The four specialists. Each computes its numbers itself and asks the configured analyst for the words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Literal

from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.analysts import Analyst
from agent.news import score_headlines
from agent.numbers import check_report, performance_facts
from agent.report import render_report
from agent.state import AgentState, CriticVerdict

PERFORMANCE_NODE = "performance_analyst"
MARKET_NODE = "market_expert"
REPORT_NODE = "report_generator"
CRITIC_NODE = "critic"


@dataclass(frozen=True)
class AgentContext:
    analyst: Analyst
    max_revisions: int = 2
    on_stage: Callable[[str], None] | None = None


def _begin(runtime: Runtime[AgentContext], stage: str) -> AgentContext:
    context = runtime.context
    if context.on_stage is not None:
        context.on_stage(stage)
    return context


def performance_analyst(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    context = _begin(runtime, PERFORMANCE_NODE)
    facts = performance_facts(state["forecast"], state["snapshot"], state["model_card"])
    text = context.analyst.performance(state["question"], facts, state["forecast"])
    return {"performance": {"facts": facts, "text": text}}


def market_expert(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    context = _begin(runtime, MARKET_NODE)
    items = score_headlines(state.get("news") or [])
    mean = fmean(item["sentiment"] for item in items) if items else None
    text = context.analyst.market(state["question"], state["ticker"], items, mean, state.get("news_note"))
    return {"market": {"items": items, "mean_sentiment": mean, "text": text}}


def report_generator(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    context = _begin(runtime, REPORT_NODE)
    critique = state.get("critique")
    feedback = critique.issues if critique is not None and not critique.approved else []
    performance, market = state["performance"], state["market"]
    report = context.analyst.report(state["question"], state["forecast"], performance, market, feedback)
    markdown = render_report(
        question=state["question"],
        facts=performance["facts"],
        forecast=state["forecast"],
        news=market["items"],
        draft=report,
        byline=context.analyst.byline,
    )
    revisions = state.get("revisions", 0) + (1 if feedback else 0)
    return {"draft": {"report": report, "markdown": markdown}, "revisions": revisions}


def critic(
    state: AgentState, runtime: Runtime[AgentContext]
) -> Command[Literal["report_generator", "__end__"]]:
    context = _begin(runtime, CRITIC_NODE)
    draft, facts = state["draft"], state["performance"]["facts"]
    issues = check_report(draft["report"], facts)
    if not issues:
        # Only a report that survives the numeric checks is worth a model's review: a failed check already
        # sends it back, and its message is more precise than any the model would write.
        verdict = context.analyst.critique(draft["markdown"], facts, state["forecast"])
        if not verdict.approved:
            issues = verdict.issues or ["The Critic rejected the report without naming an issue."]
    critique = CriticVerdict(approved=not issues, issues=issues)
    revise = bool(issues) and state.get("revisions", 0) < context.max_revisions
    return Command(update={"critique": critique}, goto=REPORT_NODE if revise else END)
