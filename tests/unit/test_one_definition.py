"""One definition per rule (issue 22): the names, patterns, limits and states that the DAGs,
the operators, the UI and retention share are defined in ``constants.py`` only. This reads every
module of the product (its syntax tree, not its text: docstrings and comments may name a DAG)
and fails on the next copy of one of them, naming the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

from amirelease import constants
from amirelease.constants import DagIds
from tests.conftest import REPO

SOURCES = sorted([*(REPO / "plugins" / "amirelease").rglob("*.py"), *(REPO / "dags").glob("*.py")])
CONSTANTS = REPO / "plugins" / "amirelease" / "constants.py"

# exact strings that must come from constants.py
NAMES = {
    **{value: f"DagIds.{name}" for name, value in vars(DagIds).items() if name.isupper()},
    constants.DEFAULT_AWS_CONN_ID: "DEFAULT_AWS_CONN_ID",
    constants.HOLD_TAG: "HOLD_TAG",
    constants.HOLD_REASON_TAG: "HOLD_REASON_TAG",
}
# strings that must not be written out again inside another literal
FRAGMENTS = {constants.GIT_REF_CHARS: "GIT_REF_PATTERN / GIT_REF_RE"}
CONFIG_READS = {"get", "getint", "getfloat", "getboolean", "getlist", "has_option"}
# Param limits: a number typed into a form's schema repeats a limit preflight also checks
LIMITS = {"maxLength": constants.MAX_NOTES, "minLength": constants.MIN_REASON}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _config_sections(tree: ast.AST) -> set[int]:
    """``conf.get("ami_release", …)``: the config section shares the release DAG's name."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr in CONFIG_READS and isinstance(node.args[0], ast.Constant):
                ids.add(id(node.args[0]))
    return ids


def copies(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstrings(tree) | _config_sections(tree)
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value in NAMES:
                found.append(f"{where}:{node.lineno}: {node.value!r} (use constants.{NAMES[node.value]})")
            for fragment, name in FRAGMENTS.items():
                if fragment in node.value:
                    found.append(f"{where}:{node.lineno}: a copy of the git-ref pattern (use constants.{name})")
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            if {"shutting-down", "stopping", "stopped"} <= items:
                found.append(f"{where}:{node.lineno}: instance states written out (use constants.LIVE_INSTANCE_STATES)")
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and type(node.value.value) is int:
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if any("REASON" in n or "NOTES" in n for n in names) and node.value.value in LIMITS.values():
                found.append(f"{where}:{node.lineno}: {names[0]} = {node.value.value} written out (use constants)")
        elif isinstance(node, ast.keyword) and node.arg in LIMITS and isinstance(node.value, ast.Constant):
            if node.value.value == LIMITS[node.arg]:
                found.append(f"{where}:{node.lineno}: {node.arg}={node.value.value} written out (use constants)")
    return found


def test_the_shared_rules_are_defined_once():
    assert len(SOURCES) > 40  # the whole product is read, not an empty glob
    found = [line for path in SOURCES if path != CONSTANTS for line in copies(path)]
    assert found == [], "\n".join(found)


def test_the_check_sees_a_copy(tmp_path):
    """The scan itself: each kind of copy it must catch, in a module written here."""
    module = tmp_path / "probe.py"
    module.write_text(
        '"""ami_release in a docstring is fine."""\n'
        'A = "ami_rollback"\n'
        'B = {"aws_conn_id": "aws_default"}\n'
        'C = r"^[A-Za-z0-9._/-]{1,128}$"\n'
        'D = ("pending", "running", "shutting-down", "stopping", "stopped")\n'
        "E = dict(maxLength=500)\n"
        'F = "ForensicHold"\n'
        'G = conf.getfloat("ami_release", "x")  # the config section: fine\n'
        "MIN_REASON_CHARS = 10\n"
    )
    found = copies(module, root=tmp_path)
    assert sorted(int(line.split(":")[1]) for line in found) == [2, 3, 4, 5, 6, 7, 9], found


# -- AWS's error codes are read in one place (errors.aws_error) --------------------------------
ERRORS = REPO / "plugins" / "amirelease" / "errors.py"


def error_reads(path: Path, root: Path = REPO) -> list[str]:
    """Where a module reads a botocore answer's ``"Error"`` by hand (``x["Error"]``,
    ``x.get("Error")``) instead of asking ``errors.aws_error``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            key = node.args[0] if node.args else None
        if isinstance(key, ast.Constant) and key.value == "Error":
            found.append(f"{where}:{node.lineno}: reads AWS's error by hand (use errors.aws_error)")
    return found


def test_aws_error_codes_are_read_in_one_place():
    found = [line for path in SOURCES if path != ERRORS for line in error_reads(path)]
    assert found == [], "\n".join(found)


def test_the_check_sees_an_error_read_by_hand(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text(
        '"""exc.response["Error"]["Code"] in a docstring is fine."""\n'
        'a = exc.response["Error"]["Code"]\n'
        'b = exc.response.get("Error", {}).get("Code")\n'
        "c = exc.last_response.get('Error', exc)\n"
        "d = aws_error(exc).code\n"
        'e = response["Errors"]\n'
    )
    found = error_reads(module, root=tmp_path)
    assert sorted(int(line.split(":")[1]) for line in found) == [2, 3, 4], found
