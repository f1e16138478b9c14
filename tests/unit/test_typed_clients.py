"""Typed AWS clients (issue 22 item 3): no AWS client of the package is typed ``Any``, and the
mypy-boto3 stubs that type them are imported for the type checker only (they are a dev
dependency; the runtime image does not have them).

Read from the source with ``ast``, in milliseconds: a parameter, an annotated attribute or
variable, or a function's return, whose name is an AWS client's (``ec2``, ``s3_client``,
``rbin_client``, ``clients``, ...) and whose annotation is ``Any`` is reported with its file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "plugins" / "amirelease"

# A name that holds an AWS client (or the package's AwsClients): the services the product calls.
CLIENT_NAME = re.compile(
    r"^_?([a-z0-9]+_)?(ec2|autoscaling|asg|s3|rbin|elbv2|elb|cloudwatch|ssm|sts)(_client)?$|^clients$"
)

# Sites the lead types in the files being edited now (operators/preflight.py). Each must still
# exist: once typed, its line here goes too.
NOT_YET: set[tuple[str, str, str]] = set()


def _is_any(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return annotation.value.strip() in ("Any", "typing.Any")
    if isinstance(annotation, ast.Name):
        return annotation.id == "Any"
    return isinstance(annotation, ast.Attribute) and annotation.attr == "Any"


def _target_name(target: ast.expr) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):  # self.ec2: Any
        return target.attr
    return None


def any_typed_clients(source: str) -> list[tuple[int, str, str]]:
    """(line, enclosing function or '', name) of each AWS client typed ``Any`` in ``source``."""
    found: list[tuple[int, str, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                a = child.args
                for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                    if arg is not None and CLIENT_NAME.match(arg.arg) and _is_any(arg.annotation):
                        found.append((arg.lineno, child.name, arg.arg))
                if CLIENT_NAME.match(child.name) and _is_any(child.returns):
                    found.append((child.lineno, child.name, f"{child.name}()"))
                visit(child, child.name)
            else:
                if isinstance(child, ast.AnnAssign):
                    name = _target_name(child.target)
                    if name and CLIENT_NAME.match(name) and _is_any(child.annotation):
                        found.append((child.lineno, where, name))
                visit(child, where)

    visit(ast.parse(source), "")
    return found


def _under_type_checking(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside an ``if TYPE_CHECKING:`` body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    inside.add(id(sub))
    return inside


def runtime_stub_imports(source: str) -> list[int]:
    """Lines that import a mypy-boto3 stub outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(source)
    allowed = _under_type_checking(tree)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        if any(m.startswith("mypy_boto3") for m in modules) and id(node) not in allowed:
            lines.append(node.lineno)
    return lines


def _sources() -> list[tuple[str, str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, f"the package's sources were not found under {PACKAGE}"
    return [(p.relative_to(PACKAGE).as_posix(), p.read_text()) for p in files]


def test_the_check_sees_what_it_looks_for():
    sample = (
        "from typing import Any\n"
        "def list_images(ec2: Any, *, s3_client: Any = None, owner: Any = None) -> None: ...\n"
        "class Reader:\n"
        "    rbin: Any\n"
        "    def __init__(self, ssm: 'Any') -> None:\n"
        "        self.autoscaling: Any = None\n"
        "    def cloudwatch(self) -> Any: ...\n"
        "def typed(ec2: EC2Client, client: Any, vault_client: Any, ec2_count: Any) -> None: ...\n"
        "def regional_ec2(region: str) -> Any: ...\n"
    )
    assert any_typed_clients(sample) == [
        (2, "list_images", "ec2"),
        (2, "list_images", "s3_client"),
        (4, "", "rbin"),
        (5, "__init__", "ssm"),
        (6, "__init__", "autoscaling"),
        (7, "cloudwatch", "cloudwatch()"),
        (9, "regional_ec2", "regional_ec2()"),
    ]
    assert runtime_stub_imports(
        "from typing import TYPE_CHECKING\n"
        "import mypy_boto3_s3\n"
        "if TYPE_CHECKING:\n"
        "    from mypy_boto3_ec2 import EC2Client\n"
        "from mypy_boto3_rbin.client import RecycleBinClient\n"
    ) == [2, 5]


def test_no_aws_client_is_typed_any():
    offences = []
    waiting = set()
    for path, source in _sources():
        for line, function, name in any_typed_clients(source):
            if (path, function, name) in NOT_YET:
                waiting.add((path, function, name))
            else:
                offences.append(f"plugins/amirelease/{path}:{line} {function or '(module/class)'}: {name}: Any")
    assert not offences, (
        "AWS clients typed Any; type them with the mypy-boto3 stubs, imported under `if TYPE_CHECKING:` "
        "(e.g. `from mypy_boto3_ec2 import EC2Client`):\n" + "\n".join(offences)
    )
    assert waiting == NOT_YET, f"typed since: remove from NOT_YET: {sorted(NOT_YET - waiting)}"


def test_the_stubs_are_imported_for_the_type_checker_only():
    offences = [
        f"plugins/amirelease/{path}:{line}" for path, source in _sources() for line in runtime_stub_imports(source)
    ]
    assert not offences, (
        "mypy-boto3 stubs imported at run time (a dev dependency: the runtime image has none); "
        "import them under `if TYPE_CHECKING:`: " + ", ".join(offences)
    )
