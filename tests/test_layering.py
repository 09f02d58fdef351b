"""The direction of flow between packages: serving (`app.py`, `inference/`, `explain/`) never imports
training, benchmarks or tests (a Space installs only serving's requirements), and `explain/` never
imports `inference/` (the pipeline builds on the explainers, not the other way round: a cycle between
them made either package's import order matter)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVING = [REPO / "app.py", *sorted((REPO / "inference").glob("*.py")), *sorted((REPO / "explain").glob("*.py"))]


def imported_packages(path: Path) -> set[str]:
    """The top-level packages `path` imports, at any depth of its code (imports inside functions too)."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
    return packages


@pytest.mark.parametrize("path", SERVING, ids=lambda path: str(path.relative_to(REPO)))
def test_serving_never_imports_training_benchmarks_or_tests(path):
    assert not imported_packages(path) & {"training", "bench", "tests"}


def test_the_explainers_never_import_the_pipeline():
    for path in sorted((REPO / "explain").glob("*.py")):
        assert "inference" not in imported_packages(path), path.name
