"""make test keeps the tests that share one sandbox fleet on one worker with xdist_group marks
(--dist loadgroup). pytest-xdist applies a group by adding "@<group>" to the test's node id;
pytest 9.2 keeps the node id elsewhere, so with pytest-xdist 3.8 the marks were silently
ignored: the "fleet" tests ran on every worker, each building its own fleet (requirements-dev.in
pins pytest below 9.2 for that). This test fails if the groups stop reaching the scheduler."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("probe")
def test_xdist_groups_reach_the_scheduler(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("only meaningful on xdist workers under --dist loadgroup (make test)")
    assert request.node.nodeid.endswith("@probe"), (
        f"{request.node.nodeid}: pytest-xdist did not apply the xdist_group mark, so make test's groups "
        "(fleet, stages, system, provisioned) are ignored; check the pytest / pytest-xdist versions"
    )
