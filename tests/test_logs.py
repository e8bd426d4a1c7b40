"""JSON log lines carry the job they belong to; text lines name it; user text never breaks a line."""

from __future__ import annotations

import io
import json
import logging

from workers import logs


def _capture(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(fmt))
    handler.addFilter(logs.JobFields())
    logger = logging.getLogger(f"stockq.test.{fmt}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_the_job_and_escape_user_text() -> None:
    logger, stream = _capture("json")
    with logs.job_context(job_id="j1", attempt=2, tenant="alice", ticker="AAPL", task="stockq.train"):
        logger.info("question %s", "line one\nfake: injected line")
    logger.info("outside any job")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: first[k] for k in logs.JOB_FIELDS} == {
        "job_id": "j1", "attempt": 2, "tenant": "alice", "ticker": "AAPL", "task": "stockq.train"
    }  # fmt: skip
    assert first["message"] == "question line one\nfake: injected line" and first["level"] == "INFO"
    assert second["job_id"] is None and "job_suffix" not in second


def test_text_lines_name_the_job() -> None:
    logger, stream = _capture("text")
    with logs.job_context(job_id="j1", attempt=3):
        logger.info("epoch done")
    assert "[job j1 #3]: epoch done" in stream.getvalue()
