"""A scripted OpenAI-compatible chat-completions server on loopback, for the tests and the benchmark.

The real ChatOpenAI client talks to it over HTTP, so timeouts, retries and structured output (the
`response_format: json_schema` path) run exactly as they would against a hosted model.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel

from agent.prompts import CRITIC, MARKET_EXPERT, PERFORMANCE_ANALYST, REPORT_GENERATOR, ROLES
from agent.state import CriticVerdict, ReportDraft


@dataclass(frozen=True)
class Stall:
    """Answer only after this long: past the client's timeout, to prove the worker does not hang."""

    seconds: float


@dataclass(frozen=True)
class Garbage:
    body: str
    status: int = 200


Reply = str | BaseModel | Stall | Garbage
Responder = Callable[[str, dict[str, Any]], Reply]


def role_of(body: dict[str, Any]) -> str:
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    return next((role for role in ROLES if f"You are the {role}" in system), "unknown")


def user_prompt(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def canned_analyst(role: str, body: dict[str, Any]) -> Reply:
    """A well-behaved model: short prose, a neutral low-confidence draft (always consistent), approval."""
    if role == REPORT_GENERATOR:
        return ReportDraft(
            summary="Neither the trend nor the model gives a clear direction for the next week.",
            technicals="Momentum and trend are mixed.",
            news="The headlines do not change the picture.",
            risks="The 80% band is wide relative to the trend.",
            stance="neutral",
            confidence=0.3,
            rationale="The model's median is zero by design and the trend is small against its band.",
        )
    if role == CRITIC:
        return CriticVerdict(approved=True, issues=[])
    if role in (PERFORMANCE_ANALYST, MARKET_EXPERT):
        return f"{role} note: nothing beyond the numbers."
    return Garbage("unknown role", status=400)


def _completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class FakeOpenAI:
    """Use as a context manager; `requests` records every request body in arrival order."""

    def __init__(self, responder: Responder = canned_analyst) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            # A short poll so that leaving the context (shutdown) takes milliseconds, not half a second.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-openai",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def prompts(self, role: str) -> list[str]:
        with self._lock:
            return [user_prompt(body) for body in self.requests if role_of(body) == role]

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # the test output stays readable
                pass

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with fake._lock:
                    fake.requests.append(body)
                reply = fake.responder(role_of(body), body)
                if isinstance(reply, Stall):
                    time.sleep(reply.seconds)
                    reply = canned_analyst(role_of(body), body)
                if isinstance(reply, Garbage):
                    self._send(reply.status, reply.body)
                    return
                content = reply.model_dump_json() if isinstance(reply, BaseModel) else reply
                self._send(200, json.dumps(_completion(body, content)))

            def _send(self, status: int, text: str) -> None:
                data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a Stall past its timeout); nobody is left to answer

        return Handler
