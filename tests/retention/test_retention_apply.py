"""Applying a plan against the sandbox account: batching, error codes, dry run, cap.

Failures come from the sandbox's fault injection (the same server as the happy path),
not from a fake client.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from amirelease.errors import RetentionError
from amirelease.retention import aws
from amirelease.retention.decide import decide
from amirelease.retention.model import Usage, image_from_api
from amirelease.retention.policy import RetentionPolicy

UTC = UTC
ME = "123456789012"
PAST_DUE = "Resource does not meet policy: deregister@2020/01/01"


def _mutations(sb):
    return {
        k: v
        for k, v in sb.request_counts().items()
        if k.split(":")[1].startswith(("CreateTags", "DeleteTags", "DeregisterImage", "DeleteSnapshot"))
    }


def _plan(sb, ids, policy, dry_run=False):
    ec2 = sb.client("ec2")
    images = [image_from_api(i) for i in ec2.describe_images(ImageIds=ids)["Images"]]
    return decide(images, Usage(), datetime.now(UTC), policy, account_id=ME, dry_run=dry_run)


def _tags(sb, image_id):
    return {
        t["Key"]: t["Value"] for t in sb.client("ec2").describe_images(ImageIds=[image_id])["Images"][0].get("Tags", [])
    }


def test_marks_are_batched_by_value(sandbox, monkeypatch):
    monkeypatch.setattr(aws, "TAG_BATCH", 2)  # the batch size, shrunk so five images make three calls
    ids = [sandbox.create_image(f"batch-{i}", age_days=90) for i in range(5)]
    policy = RetentionPolicy()
    plan = _plan(sandbox, ids, policy)
    sandbox.reset_request_counts()
    aws.apply_plan(sandbox.client("ec2"), plan, policy)
    assert sandbox.request_counts()["ec2:CreateTags"] == 3
    values = {_tags(sandbox, i)["maid_status"] for i in ids}
    assert len(values) == 1 and values.pop().startswith("Resource does not meet policy: deregister@")


def test_unmark_deletes_only_the_mark_key(sandbox):
    image = sandbox.create_image(
        "held", age_days=90, tags={"maid_status": PAST_DUE, "RetainIndefinitely": "true", "Team": "web"}
    )
    policy = RetentionPolicy()
    aws.apply_plan(sandbox.client("ec2"), _plan(sandbox, [image], policy), policy)
    assert _tags(sandbox, image) == {"RetainIndefinitely": "true", "Team": "web"}


@pytest.mark.parametrize("dry_run, stopped", [(True, None), (False, "a listing failed")], ids=["dry-run", "stopped"])
def test_dry_run_and_stopped_plans_make_no_calls(sandbox, dry_run, stopped):
    ids = [
        sandbox.create_image("a", age_days=90, tags={"maid_status": PAST_DUE}),
        sandbox.create_image("b", age_days=90, tags={"maid_status": PAST_DUE}),
        sandbox.create_image("c", age_days=90),
        sandbox.create_image("d", age_days=90, tags={"maid_status": PAST_DUE, "ForensicHold": "r1"}),
    ]
    policy = RetentionPolicy()
    plan = _plan(sandbox, ids, policy, dry_run=dry_run)
    assert plan.counts["deregister"] == 2 and plan.counts["mark"] == 1 and plan.counts["unmark"] == 1
    if stopped:
        plan = plan.stop(stopped)
    sandbox.reset_request_counts()
    assert aws.apply_plan(sandbox.client("ec2"), plan, policy)["deregistered"] == 0
    assert _mutations(sandbox) == {}


def test_the_cap_drains_and_never_blocks_marking(sandbox):
    """Over the cap: the oldest due go, the rest wait; marks and unmarks are written anyway."""
    due = [
        sandbox.create_image(f"due-{i}", age_days=90, tags={"maid_status": f"x: deregister@2020/01/0{i + 1}"})
        for i in range(3)
    ]
    fresh = sandbox.create_image("fresh", age_days=90)
    held = sandbox.create_image("held", age_days=90, tags={"maid_status": PAST_DUE, "ForensicHold": "r1"})
    policy = RetentionPolicy(max_deregistrations_per_run=2)
    plan = _plan(sandbox, [*due, fresh, held], policy)
    sandbox.reset_request_counts()
    applied = aws.apply_plan(sandbox.client("ec2"), plan, policy)
    assert applied["deregistered"] == 2 and applied["marked"] == 1 and applied["unmarked"] == 1
    left = {i["ImageId"] for i in sandbox.client("ec2").describe_images(Owners=["self"])["Images"]}
    assert due[0] not in left and due[1] not in left and due[2] in left  # oldest due first
    assert "maid_status" in _tags(sandbox, fresh) and "maid_status" not in _tags(sandbox, held)
    assert sandbox.request_counts()["ec2:DeregisterImage"] == 2


def test_deregistration_errors_by_code_and_shared_snapshot_safety(sandbox):
    ec2 = sandbox.client("ec2")
    due = {"maid_status": PAST_DUE}
    a1 = sandbox.create_image("one", age_days=90, tags=due)
    shared = sandbox.image_snapshot_id(a1)
    a2 = sandbox.create_image("two", age_days=90, tags=due, snapshot_ids=[shared])
    a3 = sandbox.create_image("three", age_days=90, tags=due)
    a4 = sandbox.create_image("four", age_days=90, tags=due)
    snap3, snap4 = sandbox.image_snapshot_id(a3), sandbox.image_snapshot_id(a4)
    policy = RetentionPolicy()
    plan = _plan(sandbox, [a1, a2, a3, a4], policy)
    sandbox.faults.fail("DeregisterImage", code="UnauthorizedOperation", match=a2)
    ec2.deregister_image(ImageId=a3)  # gone between the scan and the write
    sandbox.faults.fail("DeleteSnapshot", code="InvalidSnapshot.InUse", match=snap4)
    applied = aws.apply_plan(ec2, plan, policy)
    snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert shared in snaps  # still used by a2, whose deregistration was refused
    assert snap3 not in snaps  # a3 was already gone: its snapshot goes
    assert snap4 in snaps  # in use: kept, not an error
    assert applied["deregistered"] == 3 and applied["errors"] == [f"deregister {a2}: UnauthorizedOperation"]


def test_tag_failure_is_a_typed_error(sandbox):
    image = sandbox.create_image("old", age_days=90)
    policy = RetentionPolicy()
    plan = _plan(sandbox, [image], policy)
    sandbox.faults.fail("CreateTags", code="UnauthorizedOperation", message="no")
    with pytest.raises(RetentionError, match=r"writing mark tags failed \(UnauthorizedOperation\)"):
        aws.apply_plan(sandbox.client("ec2"), plan, policy)


def test_image_from_api():
    image = image_from_api(
        {
            "ImageId": "ami-1",
            "OwnerId": ME,
            "CreationDate": "2025-12-01T10:00:00.000Z",
            "Name": "n",
            "Tags": [{"Key": "RetainIndefinitely", "Value": "true"}],
            "BlockDeviceMappings": [
                {"Ebs": {"SnapshotId": "snap-1"}},
                {"VirtualName": "ephemeral0"},
                {"Ebs": {"SnapshotId": "snap-1"}},
            ],
        }
    )
    assert image.creation_date == datetime(2025, 12, 1, 10, tzinfo=UTC)
    assert image.snapshot_ids == ("snap-1",) and image.tags == {"RetainIndefinitely": "true"}
    assert image_from_api({"ImageId": "ami-2", "CreationDate": "garbage"}).creation_date is None
