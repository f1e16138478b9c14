"""The arrows between the product's layers point one way: DAG files -> wiring
(pipeline.py, retention_pipeline.py) -> operators -> hooks -> the pure packages. The pure
retention package (the decision, its stop conditions, the listings it decides from) never
imports an operator, a hook, the wiring or the UI: it is what a newcomer can read and test
without Airflow's task machinery (issue 22)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PURE = REPO / "plugins" / "amirelease" / "retention"
UPWARD = (
    "amirelease.operators",
    "amirelease.hooks",
    "amirelease.pipeline",
    "amirelease.retention_pipeline",
    "amirelease.ui",
    "amirelease.triggers",
)


def upward_imports(folder: Path, root: Path = REPO) -> list[str]:
    """``file:line module`` for each import (at any depth, lazy ones too) of an upper layer."""
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith(UPWARD):
                    found.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    return found


def test_the_retention_package_imports_no_upper_layer():
    assert upward_imports(PURE) == []


def test_the_check_sees_an_upward_import(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from amirelease.operators.retention import MODES\n")
    (tmp_path / "b.py").write_text("import amirelease.retention.decide\nfrom amirelease.errors import ConfigError\n")
    assert upward_imports(tmp_path, tmp_path) == ["a.py:2 amirelease.operators.retention"]
