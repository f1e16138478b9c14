"""Least privilege, proven: the IAM actions the code declares (iam.py) are exactly those the
end-to-end tests made the sandbox answer, per sender (the provider's hooks, Packer, Terraform).

`make test` runs the suite on several workers, each with its own sandbox; each writes the calls
it saw to .artifacts/aws-calls-<worker>.json, and this file runs afterwards (its own pytest
call) over all of them. In a single-process run it also reads this session's sandbox; it sorts
after every test folder it depends on."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from amirelease import iam
from tests.conftest import ARTIFACTS, REPO

NEEDS = (  # the tests whose calls this check reads; all must have run
    "tests/release/test_release_e2e.py",
    "tests/release/test_rollback_e2e.py",
    "tests/release/test_infrastructure_e2e.py",
    "tests/release/test_kill_bake.py",
    "tests/retention/",
    "tests/ui/",
)


def _calls(request) -> tuple[set[str], dict[tuple[str, str], int]]:
    ran: set[str] = {item.nodeid for item in request.session.items}
    calls: dict[tuple[str, str], int] = defaultdict(int)
    for f in ARTIFACTS.glob("collected-*.json"):
        ran.update(json.loads(f.read_text()))
    for f in ARTIFACTS.glob("aws-calls-*.json"):
        for sender, name, count in json.loads(f.read_text()):
            calls[(sender, name)] += count
    for key, count in request.getfixturevalue("aws_sandbox").callers().items():  # this session's own
        calls[key] += count
    return ran, calls


def test_declared_iam_actions_are_exactly_the_ones_the_tests_used(request):
    ran, calls = _calls(request)
    absent = [n for n in NEEDS if not any(i.startswith(n) for i in ran)]
    if absent:
        pytest.fail(f"this check reads the AWS calls of {absent}: run the whole suite (make test) first")
    observed: dict[str, set[str]] = defaultdict(set)
    for (sender, request_name), _count in calls.items():
        action = iam.iam_action(request_name)
        if sender != "other" and action:
            observed[sender].add(action)
    declared: dict[str, set[str]] = defaultdict(set)
    for grant in iam.grants():
        declared[grant.sender].update(a for a in map(iam.iam_action, grant.actions) if a)
    report = []
    for sender in sorted(set(observed) | set(declared)):
        missing = sorted(observed[sender] - declared[sender])
        extra = sorted(declared[sender] - observed[sender] - set(iam.NOT_EXERCISED))
        if missing:
            report.append(f"{sender} called but nobody declared: {missing}")
        if extra:
            report.append(f"{sender}: declared but never called by any test: {extra}")
    assert not report, "\n".join(report)


def test_each_app_roles_policy_covers_every_call_made_as_that_role(request):
    """The calls each app role's sessions signed (Packer, Terraform of that app) are all in the
    policy `cli iam-policy --app` generates for it; and the workers' keys signed none of them."""
    ran, _ = _calls(request)
    if not any(i.startswith("tests/release/test_release_e2e.py") for i in ran):
        pytest.fail("this check reads the calls of tests/release/test_release_e2e.py: run the whole suite (make test)")
    signed: set[tuple[str, str, str]] = {
        tuple(x) for f in ARTIFACTS.glob("aws-roles-*.json") for x in json.loads(f.read_text())
    }
    sb = request.getfixturevalue("aws_sandbox")
    roles = sb.assumed_roles()
    signed |= {(w, c, roles[k]) for (w, c), keys in sb.access_keys().items() for k in keys if k in roles}
    by_role: dict[str, set[str]] = defaultdict(set)
    for sender, call, role in signed:
        action = iam.iam_action(call)
        if sender in ("packer", "terraform") and action:
            by_role[role.rsplit("/", 1)[-1].removeprefix("ami-app-")].add(action)
    assert "demo-web" in by_role, "no call was signed by demo-web's role: the release tests did not use it"
    report = []
    for app, actions in sorted(by_role.items()):
        allowed = {a for st in iam.app_policy(app)["Statement"] for a in st["Action"]}
        if actions - allowed:
            report.append(f"{app}'s role made calls its policy does not allow: {sorted(actions - allowed)}")
    assert not report, "\n".join(report)


def test_the_readme_lists_the_generated_policy():
    readme = "\n".join(line.strip() for line in (REPO / "README.md").read_text().splitlines())
    assert iam.markdown() in readme, "regenerate the README's IAM table: python -m amirelease.cli iam-policy --markdown"
