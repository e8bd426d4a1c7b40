"""Debian's Prometheus tools for tests: promtool, amtool, prometheus and prometheus-alertmanager.

`make test` and `.ci/run` install the `prometheus` and `prometheus-alertmanager` packages when they are
missing; a test run elsewhere installs them itself when it can (root with apt-get), else skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

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
