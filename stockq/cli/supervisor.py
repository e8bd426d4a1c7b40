"""The process supervisor behind `stockq up`: children in their own process groups, restarted with backoff
when they die, given up after too many crashes, stopped together.

Hand-written rather than supervisord or circus: those run as a daemon of their own with a config file and
a control socket, while `stockq up` is one foreground command whose children must live and die with it
(Ctrl-C stops everything), and the whole restart policy is a few lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("stockq.up")


@dataclass(frozen=True)
class RestartPolicy:
    """A dead child is restarted after a delay that doubles with each crash inside `window_s`; at
    `max_crashes` crashes inside the window it is given up (a child that cannot start stays down instead of
    flapping)."""

    max_crashes: int = 5
    window_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0

    def delay_s(self, recent_crashes: int) -> float:
        return min(self.max_delay_s, self.first_delay_s * 2 ** (recent_crashes - 1))


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    crashes: deque[float] = field(default_factory=deque)  # monotonic times, those inside the window
    restart_at: float | None = None
    given_up: bool = False


class Supervisor:
    def __init__(self, log_dir: Path, policy: RestartPolicy | None = None) -> None:
        self.log_dir = log_dir
        self.policy = policy or RestartPolicy()
        self.children: dict[str, Child] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, {**os.environ, **(env or {})}, self.log_dir / f"{name}.log")
        self.children[name] = child
        self._start(child)
        return child

    def _start(self, child: Child) -> None:
        with open(child.log_path, "ab") as out:  # the child holds its own copy of the descriptor
            # A process group of its own: stopping or cleaning up a child reaches its pool processes too.
            child.proc = subprocess.Popen(
                child.argv, stdout=out, stderr=subprocess.STDOUT, env=child.env, start_new_session=True
            )
        child.restart_at = None

    def poll(self) -> None:
        """One supervision step: notice children that died, restart those whose backoff is over."""
        now = time.monotonic()
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is not None:
                self._died(child, now)
            if child.restart_at is not None and now >= child.restart_at:
                log.warning("restarting %s", child.name)
                self._start(child)

    def _died(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        # What is left of its group goes too: orphaned prefork children would keep taking jobs, orphaned
        # gunicorn workers would keep the port from the new master.
        _kill_group(child.proc)
        child.proc = None
        child.crashes.append(now)
        while child.crashes[0] <= now - self.policy.window_s:
            child.crashes.popleft()
        recent = len(child.crashes)
        if recent >= self.policy.max_crashes:
            child.given_up = True
            log.error("%s exited with %s: %d crashes within %.0f s, giving up on it (see %s)",
                      child.name, code, recent, self.policy.window_s, child.log_path)  # fmt: skip
            return
        delay = self.policy.delay_s(recent)
        child.restart_at = now + delay
        log.warning("%s exited with %s; restarting it in %.1f s (see %s)", child.name, code, delay,
                    child.log_path)  # fmt: skip

    def given_up(self) -> list[str]:
        return [name for name, child in self.children.items() if child.given_up]

    def stop(self, names: list[str], timeout_s: float) -> None:
        """SIGTERM to each main process at once (a Celery worker's warm shutdown finishes or requeues its
        tasks), then SIGKILL to whatever is left of their groups after `timeout_s`."""
        children = [self.children.pop(name) for name in names]
        running = [c.proc for c in children if c.proc is not None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            _kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
