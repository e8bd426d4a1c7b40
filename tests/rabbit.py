"""RabbitMQ for tests: the machine's server (127.0.0.1:5672), one private vhost per suite.

A vhost is the broker's namespace: queues, exchanges and messages of one suite are never seen by another
(or by another checkout's run on the same machine), and deleting it drops them all.
"""

from __future__ import annotations

import shutil
import subprocess

HOST = "127.0.0.1:5672"


def available() -> bool:
    return shutil.which("rabbitmqctl") is not None


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def fresh_vhost(name: str) -> str:
    """An empty vhost `name` (deleted first if it exists); its AMQP URL."""
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60)
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return url(name)


def url(vhost: str) -> str:
    return f"amqp://guest:guest@{HOST}/{vhost}"
