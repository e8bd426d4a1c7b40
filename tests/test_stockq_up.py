"""`stockq up` as an operator runs it: starts Redis when none answers, serves with auth, stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.procs import free_port, wait_until

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def descendants(pid: int) -> set[int]:
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in rows.splitlines():
        child, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_up_starts_everything_and_sigterm_leaves_nothing_running(tmp_path: Path) -> None:
    redis_port, api_port, flower_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "STOCKQ_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "STOCKQ_VAR_DIR": str(tmp_path / "var"),
        "STOCKQ_API_PORT": str(api_port),
        "STOCKQ_FLOWER_PORT": str(flower_port),
        "STOCKQ_API_KEYS": "secret-1,secret-2",
        "STOCKQ_DATA_SOURCE": "bundled",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen([str(BIN / "stockq"), "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{api_port}"
    try:

        def ready() -> bool:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            try:
                return requests.get(f"{base}/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, 120, "stockq up to be ready", every=0.5)
        body = requests.get(f"{base}/ready", timeout=2).json()
        assert body["auth"] == "enabled" and all(n >= 1 for n in body["workers"].values())
        assert requests.post(f"{base}/train", json={"ticker": "AAPL"}, timeout=5).status_code == 401
        r = requests.post(
            f"{base}/jobs/ping?wait=5", headers={"Authorization": "Bearer secret-2"}, timeout=10
        )
        assert r.status_code == 200 and r.json()["result"] == {"pong": True}
        assert requests.get(f"http://127.0.0.1:{flower_port}/healthcheck", timeout=5).text == "OK"
        assert (tmp_path / "var" / "redis").is_dir()  # it started its own Redis with data under the var dir
        children = descendants(up.pid)
        assert len(children) >= 6
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
        log.close()
    assert up.returncode == 0
    wait_until(lambda: not any(alive(p) for p in children), 30, "every child to exit")
