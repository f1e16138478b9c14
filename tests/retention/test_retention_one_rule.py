"""One rule, one place: the retention report and the Releases page judge near-miss tags with
the same function and count the same instance states as "in use"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from amirelease.retention.decide import decide
from amirelease.retention.model import Image, Usage
from amirelease.retention.policy import RetentionPolicy
from amirelease.retention.report import build_report
from amirelease.ui import present
from amirelease.ui.collect import AppSnapshot

POLICY = RetentionPolicy()
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ME = "123456789012"
REGION = "eu-west-1"

VARIANTS = [
    {"RetainIndefinitely": "true"},
    {"RetainIndefinitely": "True"},
    {"RetainIndefinitely": "false"},  # deliberate: no warning on either
    {"RetainIndefinitely": " true"},
    {"retainindefinitely": "true"},
    {"RetainIndefinitely ": "yes"},
    {"forensichold": "INC-1"},  # a near-miss hold key: the report warned, the page did not
    {"ForensicHold": "INC-1"},
    {"Retain": "true"},
    {"retainindefinitely": "true", "ForensicHold ": "x"},
]


def _page_rows(tags, reports):
    created = NOW - timedelta(days=90)
    image = {"ImageId": "ami-1", "Name": "web", "CreationDate": created.isoformat(), "Region": REGION, "Tags": tags}
    snap = AppSnapshot(
        app="web",
        description="",
        owner="",
        groups=[],
        history=[],
        images=[image],
        usage={},
        reports=reports,
        policy=POLICY,
        read_at=NOW,
    )
    return present.ami_rows(snap)


@pytest.mark.parametrize("tags", VARIANTS, ids=[repr(v) for v in VARIANTS])
def test_the_page_warns_about_exactly_the_tags_the_report_warns_about(tags):
    image = Image(image_id="ami-1", owner_id=ME, creation_date=NOW - timedelta(days=90), name="web", tags=tags)
    plan = decide([image], Usage(), NOW, POLICY, account_id=ME)
    decided = list(plan.decisions[0].warnings)
    report = build_report(plan, region=REGION, run_id="r", wall_clock=NOW, policy_source="test")
    (from_tags,) = _page_rows(tags, {})  # before any retention report: from the AMI's tags
    (from_report,) = _page_rows(tags, {REGION: report})
    assert from_tags.warnings == decided
    assert from_report.warnings == decided


def test_an_instance_shutting_down_keeps_its_image_in_use_for_both(sandbox):
    """EC2 lists an instance as shutting-down for a while; it still exists, so its image is in
    use: retention and the page must both say so (the page's own list lacked shutting-down)."""
    from moto.ec2.models import ec2_backends

    from amirelease.retention import aws
    from amirelease.ui import collect
    from sandbox.aws.state import LOCK

    image = sandbox.create_image("stopping-soon", age_days=90)
    ec2 = sandbox.client("ec2")
    instance = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=sandbox.account["subnet_ids"][0]
    )["Instances"][0]["InstanceId"]
    with LOCK:
        backend = ec2_backends[sandbox.account_id][sandbox.region]
        backend.get_instance(instance)._state.name = "shutting-down"
    assert ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"] == (
        "shutting-down"
    )
    assert aws.list_instance_usage(ec2, [image]) == {image: [instance]}
    assert collect.read_usage(ec2, [image]) == {image: [instance]}
