"""The sandbox's own tests use a fleet made straight through the API (the apps' fleets are
made by Terraform, tested in tests/release)."""

from __future__ import annotations

import pytest


@pytest.fixture
def fleet(sandbox):
    """The reset sandbox plus a group 'demo-web-asg' (template demo-web, target group, alarms),
    its ids merged into ``sandbox.account``."""
    sandbox.account.update(sandbox.create_fleet("demo-web"))
    sandbox.reset_request_counts()
    return sandbox
