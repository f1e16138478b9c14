"""Least privilege, proven: the IAM actions the code declares (iam.py) are exactly those the
end-to-end tests of this session made the sandbox answer, per sender (the provider's hooks,
Packer, Terraform). Runs last (the file name sorts after every test folder it depends on)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from amirelease import iam

NEEDS = (  # the tests whose calls this check reads; all must be in the session
    "tests/release/test_release_e2e.py",
    "tests/release/test_rollback_e2e.py",
    "tests/release/test_infrastructure_e2e.py",
    "tests/release/test_kill_bake.py",
    "tests/retention/",
    "tests/ui/",
)


def test_declared_iam_actions_are_exactly_the_ones_the_tests_used(request, aws_sandbox):
    collected = {item.nodeid for item in request.session.items}
    absent = [n for n in NEEDS if not any(i.startswith(n) for i in collected)]
    if absent:
        pytest.fail(f"this check reads the AWS calls of {absent} and needs them in the same run: run the whole suite")
    observed: dict[str, set[str]] = defaultdict(set)
    for (sender, request_name), _count in aws_sandbox.callers().items():
        action = iam.iam_action(request_name)
        if sender != "other" and action:
            observed[sender].add(action)
    declared: dict[str, set[str]] = defaultdict(set)
    for grant in iam.grants():
        declared[grant.sender].update(grant.actions)
    report = []
    for sender in sorted(set(observed) | set(declared)):
        missing = sorted(observed[sender] - declared[sender])
        extra = sorted(declared[sender] - observed[sender])
        if missing:
            report.append(f"{sender} called but nobody declared: {missing}")
        if extra:
            report.append(f"{sender}: declared but never called by any test: {extra}")
    assert not report, "\n".join(report)


def test_the_readme_lists_the_generated_policy():
    from tests.conftest import REPO

    readme = "\n".join(line.strip() for line in (REPO / "README.md").read_text().splitlines())
    assert iam.markdown() in readme, "regenerate the README's IAM table: python -m amirelease.cli iam-policy --markdown"
