"""The supervisor of `stockq up` with cheap real processes: restart with backoff, the give-up rule, cleanup
of a dead child's process group, stop."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from stockq.cli.supervisor import RestartPolicy, Supervisor
from tests.procs import alive, wait_until

QUICK = RestartPolicy(first_delay_s=0.01, max_delay_s=0.05)  # the real rule, with short backoffs
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [RestartPolicy().delay_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_a_child_that_exits_at_once_is_given_up_after_five_crashes_and_the_rest_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sup = Supervisor(tmp_path, QUICK)
    crasher = sup.spawn("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"])
    steady = sup.spawn("steady", SLEEP)
    steady_pid = steady.proc.pid
    try:
        with caplog.at_level(logging.INFO, logger="stockq.up"):

            def gave_up() -> bool:
                sup.poll()
                return crasher.given_up

            wait_until(gave_up, 30, "the crasher to be given up", every=0.02)
            for _ in range(20):  # a given-up child stays down
                sup.poll()
        assert sup.given_up() == ["crasher"]
        assert crasher.proc is None and crasher.restart_at is None and len(crasher.crashes) == 5
        messages = [r.getMessage() for r in caplog.records]
        assert sum(m == "restarting crasher" for m in messages) == 4  # started 5 times in all
        assert messages[-1].startswith("crasher exited with 3: 5 crashes within 60 s, giving up on it")
        assert steady.proc.pid == steady_pid and alive(steady_pid)
    finally:
        sup.stop(["crasher", "steady"], 5)
    assert not alive(steady_pid) and sup.children == {}


def test_a_killed_child_is_restarted_and_its_orphans_are_killed(tmp_path: Path) -> None:
    # The child starts a grandchild in its process group (as a Celery worker starts its pool) and prints
    # its pid; SIGKILL of the child alone leaves the grandchild orphaned until the supervisor cleans up.
    code = ("import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(120)']); print(g.pid, flush=True); time.sleep(120)")  # fmt: skip
    sup = Supervisor(tmp_path, QUICK)
    child = sup.spawn("worker", [sys.executable, "-c", code])
    log = tmp_path / "worker.log"
    try:
        grandchild = int(wait_until(lambda: log.read_text().strip(), 10, "the grandchild's pid"))
        first = child.proc.pid
        os.kill(first, signal.SIGKILL)
        assert alive(grandchild)

        def restarted() -> bool:
            sup.poll()
            return child.proc is not None and child.proc.pid != first

        wait_until(restarted, 10, "the child to be restarted", every=0.02)
        assert not child.given_up and len(child.crashes) == 1
        wait_until(lambda: not alive(grandchild), 5, "the orphaned grandchild to be killed")
        assert child.proc.poll() is None
    finally:
        sup.stop(["worker"], 5)
