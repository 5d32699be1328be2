"""The package's shape, read from its imports: no circles, imports run downwards, no oversized module or folder."""

from __future__ import annotations

import ast

import pytest
from importgraph import PACKAGE, cycles, folder_lines, read_graph, room

GRAPH = read_graph()
# Who may import whom (besides errors, which everyone may): cli -> flows -> tasks -> models, schemas.
# config is read by every caller of a run; evaluation is pure maths below models.
MAY_IMPORT = {
    "cli": {"cli", "config", "flows", "tasks", "models", "schemas", "evaluation"},
    "flows": {"flows", "config", "tasks", "models", "schemas", "evaluation"},
    "tasks": {"tasks", "config", "models", "schemas", "evaluation"},
    "config": {"config", "models", "schemas", "evaluation"},
    "models": {"models", "schemas", "evaluation"},
    "schemas": {"schemas"},
    "evaluation": {"evaluation"},
}
NO_SERVICES = ("prefect", "s3fs", "mlflow", "great_expectations", "distributed")


def test_no_import_circles() -> None:
    assert cycles(GRAPH) == []


def test_imports_run_downwards() -> None:
    wrong = sorted(f"{m} -> {t}" for m, targets in GRAPH.edges.items() for t in targets
                   if room(m) in MAY_IMPORT and room(t) not in MAY_IMPORT[room(m)] | {"errors", "iqaflow"})
    assert wrong == []


@pytest.mark.parametrize("top", ["models", "schemas", "evaluation"])
def test_maths_layers_import_no_services(top: str) -> None:
    found = []
    for mod, path in GRAPH.files.items():
        if room(mod) != top:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            found += [f"{mod}: {n}" for n in names if n.split(".")[0] in NO_SERVICES]
    assert found == []


def test_no_module_over_400_lines_without_a_reason() -> None:
    over = [m for m in GRAPH.files if GRAPH.lines(m) > 420
            and "on purpose" not in (ast.get_docstring(ast.parse(GRAPH.files[m].read_text())) or "")]
    assert over == []


def test_no_folder_holds_40_percent_of_the_package() -> None:
    _, alone, total = folder_lines(GRAPH)
    assert max(alone.values()) / total <= 0.4, alone.most_common(3)
    assert (PACKAGE / "tasks").is_dir()
