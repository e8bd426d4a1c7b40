"""`stockq` without a stack: what it prints for job records, its exit codes, its arguments, and its event
stream reader. The stream's reconnects are driven by a small HTTP server here (a real stream ends only
after 25 s); every command against the real API and workers: tests/test_cli_live.py."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner
from rich.console import Console

from stockq.cli.follow import Event, parse_sse
from stockq.cli.job_view import follow_line, jobs_table, progress_text, summary_lines
from stockq.cli.main import main
from stockq.cli.output import JOB_FAILED, OK, exit_code_of
from stockq.cli.render import models_table
from tests.procs import free_port
from workers.jobs.model import JobStatus

ID = "3f2a9c1b" + "0" * 24
T0 = 1_700_000_000.0


def record(status: str = "running", **fields: Any) -> dict[str, Any]:
    return {
        "job_id": ID, "type": "train", "status": status, "attempt": 1, "stage": None,
        "params": {"ticker": "^GSPC"}, "progress": {}, "submitted_at": T0, "started_at": T0 + 1,
        "finished_at": None, "result": None, "error": None, "attempts": [], "cancel_requested": False,
        **fields,
    }  # fmt: skip


REFIT = {
    "phase": "refit", "label": "refit epoch 2/4 (epochs from the selection's early stop)", "step": 2,
    "steps": 4, "phase_index": 2, "phases": 2, "epoch": 2, "epochs": 4, "loss": 0.123456, "val_loss": None,
}  # fmt: skip


def text(renderable: Any) -> str:
    console = Console(record=True, width=220)
    console.print(renderable)
    return console.export_text()


def test_exit_codes_by_status() -> None:
    codes = {s.value: exit_code_of(s.value) for s in JobStatus}
    assert codes == {"queued": OK, "running": OK, "succeeded": OK, "failed": JOB_FAILED,
                     "cancelled": JOB_FAILED}  # fmt: skip


def test_a_following_line_says_phase_epoch_and_loss_once() -> None:
    job = record(progress=REFIT, stage="train_parent")
    assert follow_line(job) == (
        "running · phase 2/2 · refit epoch 2/4 (epochs from the selection's early stop) · loss 0.1235"
    )
    # No label (a record from before labels): the stage, the epoch and both losses.
    bare = {"epoch": 1, "epochs": 3, "loss": 0.5, "val_loss": 0.25}
    assert progress_text(record(progress=bare, stage="train_parent")) == (
        "train_parent · epoch 1/3 · loss 0.5000 (val 0.2500)"
    )
    assert follow_line(record("queued")) == "queued"
    assert follow_line(record("succeeded", finished_at=T0 + 13.5)) == "succeeded in 12.5 s"
    failed = record("failed", error={"code": "model_not_found", "message": "no model for ^GSPC"})
    assert follow_line(failed) == "failed: model_not_found: no model for ^GSPC"


def test_status_summary_of_a_failed_job_names_its_error() -> None:
    failed = record("failed", finished_at=T0 + 3.25, stage="forecast", type="predict",
                    error={"code": "model_not_found", "message": "no model for ^GSPC"})  # fmt: skip
    assert summary_lines(failed) == [
        f"job       3f2a9c1b  ({ID})",
        "type      predict · ^GSPC",
        "status    failed",
        "attempt   1",
        "duration  2.2 s",
        "error     model_not_found: no model for ^GSPC",
    ]


def test_status_summary_of_a_running_job_explains_a_hand_off() -> None:
    running = record(progress=REFIT, attempt=2, attempts=[{"attempt": 1, "outcome": "handed_off"}])
    lines = summary_lines(running, now=T0 + 61)
    assert lines[3] == f"progress  {progress_text(running)}"
    assert lines[4] == "attempt   2 (earlier: #1 handed off: the job went on as its next task (not a retry))"
    assert lines[5] == "duration  1 min 0 s so far"
    queued = record("queued", started_at=None)
    assert summary_lines(queued, now=T0 + 2)[-1] == "duration  queued for 2.0 s"


def test_status_summary_of_a_succeeded_training_and_prediction() -> None:
    made = {"name": "stockq-parent", "version": "2", "champion": False, "decision": "kept v1: not better"}
    trained = record("succeeded", finished_at=T0 + 11, result=made)
    assert summary_lines(trained)[-1] == "result    stockq-parent v2 (not the champion); kept v1: not better"
    forecast = [{"date": f"2023-01-0{d}", "p10": 90.0, "p50": 100.0 + d, "p90": 110.0} for d in range(3, 6)]
    made = {"ticker": "^GSPC", "model": {"name": "stockq-parent", "version": 1}, "forecast": forecast}
    predicted = record("succeeded", type="predict", finished_at=T0 + 2, result=made)
    assert summary_lines(predicted)[-1] == (
        "result    3-day forecast of ^GSPC from stockq-parent v1: median 105.00 on 2023-01-05 "
        "(80 % band 90.00 to 110.00)"
    )


def test_jobs_table_shows_short_ids_and_tickers() -> None:
    shown = text(jobs_table([
        record(progress=REFIT),
        record("succeeded", job_id="a" * 32, type="ingest", params={"tickers": ["AAPL", "MSFT"]}),
        record("succeeded", job_id="b" * 32, type="ping", params={}),
    ]))  # fmt: skip
    rows = [line for line in shown.splitlines() if line.startswith(("│ 3f2a", "│ aaaa", "│ bbbb"))]
    assert len(rows) == 3 and ID not in shown  # the 8 characters the console shows, not the whole id
    assert "^GSPC" in rows[0] and "refit epoch 2/4" in rows[0]
    assert "AAPL, MSFT" in rows[1] and "│ —" in rows[2]


def test_models_table_has_a_skill_column() -> None:
    shown = text(models_table([
        {"name": "stockq-parent", "champion_version": "3", "trained_until": "2022-12-28", "kind": "parent",
         "skill": {"skill": 0.031, "lo": -0.005, "hi": 0.068}},
        {"name": "stockq-child-AAPL", "champion_version": None, "trained_until": None, "kind": "child",
         "skill": None},
    ]))  # fmt: skip
    assert "skill (90 % interval)" in shown
    parent, child = (line for line in shown.splitlines() if "stockq-" in line)
    assert "+3.1% (-0.5% to +6.8%)" in parent and child.rstrip(" │").endswith("—")


STREAM = (
    b'retry: 1000\nevent: job\nid: 0\ndata: {"status":"running"}\n\n'
    b": keep-alive\n\n"
    b'event: log\r\nid: 2\r\ndata: {"lines":[{"n":0},{"n":1}],\r\ndata: "next":2}\r\n\r\n'
)


@pytest.mark.parametrize("size", [1, 7, len(STREAM)])
def test_the_event_stream_parses_however_it_is_cut(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert list(parse_sse(chunks)) == [
        Event("job", '{"status":"running"}', "0", 1000),
        Event("log", '{"lines":[{"n":0},{"n":1}],\n"next":2}', "2", 1000),
    ]


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    for args in (["status"], ["cancel"], ["retry"], ["status", ID, "--bogus"], ["jobs", "--limit", "x"]):
        ran = runner.invoke(main, args)
        assert ran.exit_code == 2, (args, ran.output)
    assert "--follow" in runner.invoke(main, ["retry", "--help"]).output


class FakeApi(BaseHTTPRequestHandler):
    """The API's answers this module needs: an ambiguous prefix (409 with candidates) and a job's event
    stream that ends before the job does (as the real one does after 25 s), resumed at the log cursor."""

    requests: list[str] = []  # noqa: RUF012 (one server per test, reset by its fixture)

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        FakeApi.requests.append(self.path)
        if url.path == "/status/3f2a":
            body = {"error": {"code": "ambiguous_job_id", "message": "3f2a is the start of 2 job ids",
                              "details": {"candidates": [ID, "3f2a" + "1" * 28]}}}  # fmt: skip
            return self._send(409, "application/json", json.dumps(body).encode())
        if url.path == f"/status/{ID[:8]}":
            return self._send(200, "application/json", json.dumps(record("queued", started_at=None)).encode())
        if url.path == f"/jobs/{ID}/log":
            page = {"lines": [{"n": 0, "ts": T0, "message": "loading ^GSPC"}], "next": 1}
            return self._send(200, "application/json", json.dumps(page).encode())
        after = parse_qs(url.query)["after"][0]
        if after == "0":  # the first stream: started, a log line, then the server ends it
            log = {"lines": [{"n": 0, "ts": T0, "message": "loading ^GSPC"}], "next": 1}
            events = [("job", record(), 0), ("log", log, 1)]
        else:  # the reconnect, from the log cursor: an epoch, then the end
            events = [("job", record(progress=REFIT), 1),
                      ("job", record("succeeded", finished_at=T0 + 9, result={"pong": True}), 1)]  # fmt: skip
        stream = "retry: 10\n" + "".join(f"event: {e}\nid: {n}\ndata: {json.dumps(d)}\n\n"
                                          for e, d, n in events)  # fmt: skip
        self._send(200, "text/event-stream", stream.encode())

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake_api() -> Iterator[dict[str, str]]:
    FakeApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield {"STOCKQ_API_URL": f"http://127.0.0.1:{server.server_port}", "STOCKQ_API_KEY": "k" * 24}
    finally:
        server.shutdown()
        server.server_close()


def test_an_ambiguous_prefix_lists_its_candidates_and_exits_2(fake_api: dict[str, str]) -> None:
    ran = CliRunner().invoke(main, ["status", "3f2a"], env=fake_api)
    assert ran.exit_code == 2
    assert "409 ambiguous_job_id: 3f2a is the start of 2 job ids" in ran.stderr
    assert f"\n  {ID}\n" in ran.stderr and "3f2a" + "1" * 28 in ran.stderr
    ran = CliRunner().invoke(main, ["status", "3f2a", "--json"], env=fake_api)
    doc = json.loads(ran.stdout)
    assert ran.exit_code == 2 and doc["error"]["code"] == "ambiguous_job_id" and len(doc["candidates"]) == 2


def test_follow_reconnects_at_the_log_cursor_until_the_final_record(fake_api: dict[str, str]) -> None:
    ran = CliRunner().invoke(main, ["status", ID[:8], "--follow", "--logs"], env=fake_api)
    assert ran.exit_code == 0, ran.output
    events = [p for p in FakeApi.requests if "/events" in p]
    assert events == [f"/jobs/{ID}/events?after=0", f"/jobs/{ID}/events?after=1"]
    lines = [line.split(" ", 2)[2] for line in ran.stderr.splitlines()]  # after the time and the short id
    assert lines == [
        "queued",
        "running",
        "log loading ^GSPC",
        f"running · {progress_text(record(progress=REFIT))}",
        "succeeded in 8.0 s",
    ]
    assert "status    succeeded" in ran.stdout


@pytest.mark.slow
def test_up_says_when_auto_falls_back_to_the_bundled_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Yahoo made unreachable for real: curl's requests go to a proxy on a closed port."""
    from stockq.cli.data_note import data_note
    from stockq.settings import Settings

    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING):
        note = data_note(Settings(var_dir=tmp_path, data_source="auto"))
    # The probe's failure is said once, in the note: no logged detail printed ahead of it.
    assert [r.getMessage() for r in caplog.records if r.name == "ml.errors"] == []
    assert note["online"] is False and note["served"] == "bundled" and note["ends"] == "2022-12-28"
    assert note["text"].startswith("data: auto, but Yahoo Finance is unreachable")
    assert "which ends 2022-12-28" in note["text"]
    # With yfinance alone the note gives the reason itself, not an error_id whose log line was held back.
    strict = data_note(Settings(var_dir=tmp_path, data_source="yfinance"))
    assert strict["online"] is False and strict["served"] is None
    assert strict["text"].startswith("data: yfinance, but Yahoo Finance is unreachable (")
    assert "error_id" not in strict["text"], strict["text"]


def test_status_logs_prints_the_jobs_log_lines(fake_api: dict[str, str]) -> None:
    ran = CliRunner().invoke(main, ["status", ID[:8], "--logs"], env=fake_api)
    assert ran.exit_code == 0 and "status    queued" in ran.stdout
    assert [line.split(" ", 1)[1] for line in ran.stderr.splitlines()] == [f"{ID[:8]} log loading ^GSPC"]
