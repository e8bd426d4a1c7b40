"""The chat model behind the LLM analyst: ChatOpenAI with a hard timeout and bounded retries.

Every failure (timeout, HTTP error, an answer that is not the requested JSON) surfaces as LLMError, so the
service can fall back to the deterministic analyst or fail the job with a clear code.
"""

from __future__ import annotations

from typing import Any, TypeVar

import openai
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel, SecretStr

from agent.configuration import AgentConfig
from ml.errors import StockqError

M = TypeVar("M", bound=BaseModel)


class LLMError(StockqError):
    code = "llm_error"
    http_status = 502


class ChatLLM:
    def __init__(self, config: AgentConfig) -> None:
        from langchain_openai import ChatOpenAI

        self.model = config.llm_model
        self._timeout_s = config.llm_timeout_s
        self._attempts = config.llm_max_retries + 1
        self._chat = ChatOpenAI(
            model=config.llm_model,
            api_key=config.openai_api_key or SecretStr(""),
            base_url=config.openai_base_url,
            timeout=config.llm_timeout_s,
            max_retries=config.llm_max_retries,
        )
        self._structured: dict[type[BaseModel], Runnable[Any, Any]] = {}

    def text(self, system: str, user: str) -> str:
        reply = self._invoke(self._chat, system, user)
        content = reply.content if isinstance(reply.content, str) else ""
        if not content.strip():
            raise LLMError(f"LLM {self.model} returned an empty answer")
        return content.strip()

    def structured(self, system: str, user: str, schema: type[M]) -> M:
        if schema not in self._structured:
            self._structured[schema] = self._chat.with_structured_output(schema, method="json_schema")
        parsed = self._invoke(self._structured[schema], system, user)
        if not isinstance(parsed, schema):
            raise LLMError(f"LLM {self.model} did not answer in the {schema.__name__} schema")
        return parsed

    def _invoke(self, runnable: Runnable[Any, Any], system: str, user: str) -> Any:
        try:
            return runnable.invoke([SystemMessage(system), HumanMessage(user)])
        except openai.APITimeoutError as exc:
            raise LLMError(
                f"LLM {self.model} did not answer within {self._timeout_s:g} s ({self._attempts} attempt(s))"
            ) from exc
        # OpenAIError covers HTTP and connection errors; ValueError covers unparseable or off-schema JSON
        # (OutputParserException, pydantic's ValidationError and json's JSONDecodeError all derive from it).
        except (openai.OpenAIError, ValueError) as exc:
            # The provider's words (an account, a quota, the prompt echoed back) are for the log only.
            raise LLMError(f"LLM {self.model} failed", detail=f"{type(exc).__name__}: {exc}") from exc
