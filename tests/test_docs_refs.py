"""Every test the README and docs/reliability.md cite as proof exists: a guarantee whose test was renamed
or removed must not keep its line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# `tests/x.py::name`, and the `::name` shorthands that follow it in the same cell.
REFERENCE = re.compile(r"(tests/[a-z_0-9]+\.py)(?:::([A-Za-z_0-9]+))?|`::([A-Za-z_0-9]+)")


def _references(doc: Path) -> list[tuple[str, str | None]]:
    found, current = [], None
    for m in REFERENCE.finditer(doc.read_text()):
        if m.group(1):
            current = m.group(1)
            found.append((current, m.group(2)))
        elif current is not None:
            found.append((current, m.group(3)))
    return found


@pytest.mark.parametrize("doc", ["README.md", "docs/reliability.md"])
def test_every_cited_test_exists(doc: str) -> None:
    refs = _references(ROOT / doc)
    assert len(refs) >= 5  # the pattern still finds the citations
    missing = [
        f"{path}::{name}" if name else path
        for path, name in refs
        if not (ROOT / path).exists() or (name and f"def {name}(" not in (ROOT / path).read_text())
    ]
    assert missing == []
