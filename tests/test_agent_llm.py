"""The LLM path: the real ChatOpenAI client against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agent.analysts import LLMAnalyst
from agent.configuration import AgentConfig
from agent.graph import build_graph
from agent.llm import ChatLLM, LLMError
from agent.nodes import AgentContext
from agent.prompts import CRITIC, MARKET_EXPERT, PERFORMANCE_ANALYST, REPORT_GENERATOR
from agent.state import CriticVerdict, ReportDraft
from tests.fakellm import FakeOpenAI, Garbage, Reply, Responder, Stall, canned_analyst, role_of

INPUTS = json.loads((Path(__file__).parent / "data" / "agent_inputs.json").read_text())


class Script:
    """A responder whose behaviour a test swaps per role."""

    def __init__(self) -> None:
        self.overrides: dict[str, Responder] = {}

    def __call__(self, role: str, body: dict[str, Any]) -> Reply:
        return self.overrides.get(role, canned_analyst)(role, body)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(script) as fake:
        yield fake


def llm_config(server: FakeOpenAI, tmp_path: Path, **overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "var_dir": tmp_path,
        "llm_model": "fake-analyst",
        "openai_api_key": SecretStr("test-key"),
        "openai_base_url": server.base_url,
        "llm_timeout_s": 2.0,
        "llm_max_retries": 0,
    }
    return AgentConfig(**{**values, **overrides})


def run(config: AgentConfig) -> dict[str, Any]:
    data = copy.deepcopy(INPUTS)
    state = {
        "ticker": "AAPL",
        "question": "Should I buy AAPL?",
        "forecast": data["forecast"],
        "snapshot": data["snapshot"],
        "model_card": data["model_card"],
        "news": data["news"],
        "news_note": None,
    }
    context = AgentContext(analyst=LLMAnalyst(ChatLLM(config)), max_revisions=config.max_revisions)
    return build_graph().invoke(state, context=context)


def bullish(role: str, body: dict[str, Any]) -> Reply:
    """A model that keeps calling the down trend bullish."""
    return ReportDraft(
        summary="Buy.",
        technicals="Strong.",
        news="Great.",
        risks="None.",
        stance="bullish",
        confidence=0.5,
        rationale="It always goes up.",
    )


def test_prompts_carry_the_real_numbers(server: FakeOpenAI, tmp_path: Path) -> None:
    final = run(llm_config(server, tmp_path))
    forecast = INPUTS["forecast"]
    performance = server.prompts(PERFORMANCE_ANALYST)[0]
    for s in forecast["forecast"]:
        assert f"| {s['date']} | {s['p10']:.2f} | {s['p50']:.2f} | {s['p90']:.2f} |" in performance
    assert f"Last close: {forecast['last_close']:.2f}" in performance
    assert "stockq-parent v3" in performance and "Trend: down" in performance
    # The model's evaluation, AAPL's own row first, and no retired metric.
    assert (
        "AAPL alone: no measurable skill over zero+EWMA: +0.9% (90 % interval -0.3% to +2.1%)" in performance
    )
    assert "confidence cap from the evaluation: 0.62" in performance
    assert "direction accuracy" not in performance and "backtest" not in performance.lower()
    assert "Should I buy AAPL?" in performance
    market = server.prompts(MARKET_EXPERT)[0]
    assert "Apple shares plunge" in market and "sentiment -0.61" in market
    report = server.prompts(REPORT_GENERATOR)[0]
    assert f"{PERFORMANCE_ANALYST} note: nothing beyond the numbers." in report
    assert f"{forecast['seven_day']['p50']:.2f}" in report
    # Every writer is told what the model is: a band around a zero median, the direction being the trend's.
    systems = {role_of(body): body["messages"][0]["content"] for body in server.requests}
    for role in (PERFORMANCE_ANALYST, REPORT_GENERATOR):
        assert (
            "its median is zero by design" in systems[role]
            and "direction can only come from the" in systems[role]
        )
    assert "a direction credited to the model's forecast" in systems[CRITIC]
    critic = server.prompts(CRITIC)[0]
    assert final["draft"]["markdown"] in critic
    # The structured answer is the stance; the byline names the model.
    assert final["draft"]["report"].stance == "neutral" and final["draft"]["report"].confidence == 0.3
    assert "Written with the LLM fake-analyst." in final["draft"]["markdown"]
    assert all(body["model"] == "fake-analyst" for body in server.requests)
    structured = [body for body in server.requests if "response_format" in body]
    assert {body["response_format"]["json_schema"]["name"] for body in structured} == {
        "ReportDraft",
        "CriticVerdict",
    }


def test_a_contradicting_stance_is_revised_at_most_twice(
    script: Script, server: FakeOpenAI, tmp_path: Path
) -> None:
    script.overrides[REPORT_GENERATOR] = bullish
    final = run(llm_config(server, tmp_path))
    reports = server.prompts(REPORT_GENERATOR)
    assert len(reports) == 3 and final["revisions"] == 2
    assert "rejected your previous draft" not in reports[0]
    assert all("The stance is bullish but the trend is down" in p for p in reports[1:])
    # A report that fails the numeric checks never reaches the model critic.
    assert server.prompts(CRITIC) == []
    assert not final["critique"].approved


def test_the_model_critic_can_send_a_report_back(script: Script, server: FakeOpenAI, tmp_path: Path) -> None:
    verdicts = iter(
        [CriticVerdict(approved=False, issues=["The summary cites a price that is not in the data."])]
    )
    script.overrides[CRITIC] = lambda role, body: next(verdicts, CriticVerdict(approved=True, issues=[]))
    final = run(llm_config(server, tmp_path))
    reports = server.prompts(REPORT_GENERATOR)
    assert len(reports) == 2 and final["revisions"] == 1
    assert "The summary cites a price that is not in the data." in reports[1]
    assert final["critique"].approved


@pytest.mark.parametrize(
    "reply",
    [
        Garbage("<html>502 Bad Gateway</html>"),
        Garbage('{"error": {"message": "overloaded"}}', status=500),
        "this is not JSON",
        '{"summary": "s", "technicals": "t", "news": "n", "risks": "r", "stance": "up", '
        '"confidence": 7, "rationale": "x"}',
    ],
    ids=["html", "http-500", "not-json", "off-schema"],
)
def test_garbage_fails_with_llm_error(
    script: Script, server: FakeOpenAI, tmp_path: Path, reply: Reply
) -> None:
    script.overrides[REPORT_GENERATOR] = lambda role, body: reply
    with pytest.raises(LLMError) as err:
        run(llm_config(server, tmp_path))
    assert err.value.code == "llm_error" and "fake-analyst" in err.value.message


def test_a_stalled_model_times_out_instead_of_hanging(
    script: Script, server: FakeOpenAI, tmp_path: Path
) -> None:
    script.overrides[PERFORMANCE_ANALYST] = lambda role, body: Stall(5.0)
    start = time.perf_counter()
    with pytest.raises(LLMError, match=r"did not answer within 0.3 s \(2 attempt\(s\)\)"):
        run(llm_config(server, tmp_path, llm_timeout_s=0.3, llm_max_retries=1))
    # Two attempts of 0.3 s plus the client's short retry back-off; far below the 5 s stall.
    assert time.perf_counter() - start < 3.0
