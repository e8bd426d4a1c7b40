"""schemathesis against `/openapi.json` of a live gunicorn, every check on, with an API key: the published
document is what the server does. The only allowed exceptions are in tests/schemathesis.toml.

`make test` runs a short pass; `make fuzz` the long one (STOCKQ_FUZZ_EXAMPLES=50: well over 500 cases).
No Celery workers: submissions stay queued (202), and waiting is off so no request blocks on a job."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from stockq.settings import Settings
from tests.procs import free_port, start_gunicorn, start_redis

pytestmark = pytest.mark.slow
KEY = "fuzz-secret-0123456789abcdef"
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("STOCKQ_FUZZ_EXAMPLES", "3"))
# Cases a pass must at least generate (coverage, fuzzing and stateful phases together).
MIN_CASES = 500 if EXAMPLES >= 50 else 100
# Another seed explores other cases: `STOCKQ_FUZZ_SEED=... make fuzz`.
SEED = os.environ.get("STOCKQ_FUZZ_SEED", "20240610")


def test_the_openapi_document_is_what_the_server_does(tmp_path: Path) -> None:
    port = free_port()
    redis_proc = start_redis(port, tmp_path / "redis")
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0", var_dir=tmp_path / "var", data_source="bundled",
        api_keys=f"fuzz:{KEY}",
    )  # fmt: skip
    settings.var_path.mkdir(parents=True, exist_ok=True)
    # Limits high enough that the fuzzer reaches the handlers (429 is documented and tested elsewhere).
    api = start_gunicorn(
        settings, api_port := free_port(), STOCKQ_MAX_WAITING_PER_PROCESS="0", STOCKQ_MAX_INFLIGHT="1000000",
        STOCKQ_RATE_LIMIT="", STOCKQ_RATE_LIMIT_TRAIN="", STOCKQ_RATE_LIMIT_PREDICT="",
        STOCKQ_RATE_LIMIT_AGENT="",
    )  # fmt: skip
    try:
        # The first /models of a process imports MLflow (and the first creates its store): on a loaded
        # machine longer than 15 s. Speed is no part of the contract: warm up, and a generous timeout.
        requests.get(f"http://127.0.0.1:{api_port}/models", headers={"Authorization": f"Bearer {KEY}"},
                     timeout=300)  # fmt: skip
        run = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(CONFIG), "--no-color",
             "run", f"http://127.0.0.1:{api_port}/openapi.json", "-H", f"Authorization: Bearer {KEY}",
             "--max-examples", str(EXAMPLES), "--seed", SEED, "--request-timeout", "120"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path,
        )  # fmt: skip
    finally:
        api.stop()
        redis_proc.stop()
    out = run.stdout + run.stderr
    print(out[-3000:])
    assert run.returncode == 0, out[-8000:]
    generated = re.search(r"(\d+) generated", out)
    assert generated and int(generated.group(1)) >= MIN_CASES, out[-2000:]
