"""The analyst graph: two specialists in parallel, then report <-> critic until approved or out of revisions.

START -> performance_analyst -+-> report_generator -> critic -> END
START -> market_expert -------+         ^                |
                                        +-- revise ------+
"""

from __future__ import annotations

from functools import cache
from typing import Any

from langgraph.graph import START, StateGraph

from agent.nodes import (
    CRITIC_NODE,
    MARKET_NODE,
    PERFORMANCE_NODE,
    REPORT_NODE,
    AgentContext,
    critic,
    market_expert,
    performance_analyst,
    report_generator,
)
from agent.state import AgentState


@cache
def build_graph() -> Any:
    """Compiled once per process: the graph holds no per-run state (that travels in the context)."""
    graph = StateGraph(AgentState, context_schema=AgentContext)
    graph.add_node(PERFORMANCE_NODE, performance_analyst)
    graph.add_node(MARKET_NODE, market_expert)
    graph.add_node(REPORT_NODE, report_generator)
    graph.add_node(CRITIC_NODE, critic)
    graph.add_edge(START, PERFORMANCE_NODE)
    graph.add_edge(START, MARKET_NODE)
    graph.add_edge([PERFORMANCE_NODE, MARKET_NODE], REPORT_NODE)
    graph.add_edge(REPORT_NODE, CRITIC_NODE)
    return graph.compile(name="stockq-analyst")
