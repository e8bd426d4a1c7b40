"""The LangGraph analyst: four specialists (Performance Analyst, Market Expert, Report Generator, Critic)
behind a semantic cache."""

from agent.configuration import AgentConfig
from agent.service import AnalystService

__all__ = ["AgentConfig", "AnalystService"]
