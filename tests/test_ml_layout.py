"""The layout of the ML package, read from its source with ast (nothing imported): ml imports none of the
edges (workers, webapp, agent), ml.config sits at the bottom, the subpackages' __init__ re-export nothing,
and no ml module imports itself back through another: the backtest <-> dataprep <-> loop <-> train_config
and registration <-> train cycles are gone. Every import counts, TYPE_CHECKING and function-level ones too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ML = Path(__file__).resolve().parent.parent / "ml"
SUBPACKAGES = ("features", "model", "training", "evaluation", "registry", "serving")


def _module(path: Path) -> str:
    parts = path.relative_to(ML.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(ML.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every module `name` imports (absolute names; `from a import b` is a.b when b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & MODULES.keys()
            found |= subs or {node.module}
    return found


def _ml_graph() -> dict[str, set[str]]:
    return {name: _imports(name) & MODULES.keys() - {name} for name in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_named_modules_exist_where_the_layout_puts_them() -> None:
    for name in (
        "ml.config",
        "ml.features.technical",
        "ml.model.vol_lstm",
        "ml.training.train",
        "ml.training.job",
        "ml.evaluation.walk_forward",
        "ml.registry.mlflow_registry",
        "ml.registry.registration",
        "ml.serving.predict",
    ):
        assert name in MODULES, name
    for gone in ("ml.train_config", "ml.train", "ml.backtest", "ml.registry", "ml.model"):
        assert not (ML.parent / f"{gone.replace('.', '/')}.py").exists(), gone


def test_ml_imports_no_edge_package() -> None:
    edges = {
        name: sorted(m for m in _imports(name) if m.split(".")[0] in ("workers", "webapp", "agent"))
        for name in MODULES
    }
    assert {name: found for name, found in edges.items() if found} == {}


def test_config_is_the_bottom() -> None:
    ml_imports = {m for m in _imports("ml.config") if m.split(".")[0] == "ml"}
    assert ml_imports == {"ml.errors"}


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_a_subpackage_init_is_only_a_docstring(package: str) -> None:
    body = ast.parse((ML / package / "__init__.py").read_text()).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


def test_registration_no_longer_imports_training_entry_points() -> None:
    assert "ml.training.train" not in _imports("ml.registry.registration")
    assert "ml.training.job" in _imports("ml.registry.registration")


def test_no_import_cycle_in_ml() -> None:
    graph = _ml_graph()
    # The graph is read for real: training imports its config and registration, as the layout says.
    assert {"ml.config", "ml.registry.registration", "ml.training.job"} <= graph["ml.training.train"]
    assert _cycle(graph) is None
