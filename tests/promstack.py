"""Debian's Prometheus tools for tests: promtool, amtool, prometheus and prometheus-alertmanager.

`make test` and `.ci/run` install the `prometheus` and `prometheus-alertmanager` packages when they are
missing; a test run elsewhere installs them itself when it can (root with apt-get), else skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
}
_apt_lock = threading.Lock()
_apt_updated = False


def tool(name: str) -> str:
    """The path of a Prometheus tool, installing its Debian package once when missing."""
    global _apt_updated
    found = shutil.which(name)
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.skip(f"{name} is missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _apt_lock:
        if not _apt_updated:
            subprocess.run([apt, "update", "-qq"], env=env, check=False, capture_output=True, timeout=300)
            _apt_updated = True
        subprocess.run(
            [apt, "install", "-y", "--no-install-recommends", PACKAGES[name]],
            env=env, check=False, capture_output=True, timeout=600,
        )  # fmt: skip
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is missing and `apt-get install {PACKAGES[name]}` did not provide it")
    return found


class WebhookReceiver:
    """Alertmanager's webhook receiver on loopback: keeps every notification it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def notified(self, alertname: str, status: str, **labels: str) -> bool:
        return any(
            alert["status"] == status
            and alert["labels"].get("alertname") == alertname
            and labels.items() <= alert["labels"].items()
            for message in self.received
            for alert in message["alerts"]
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
