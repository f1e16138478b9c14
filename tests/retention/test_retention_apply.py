"""Applying a plan (batching, error codes, dry run, cap) with a recording fake EC2 client."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from amirelease.errors import RetentionError
from amirelease.retention import aws
from amirelease.retention.decide import decide
from amirelease.retention.model import Image, Usage, image_from_api
from amirelease.retention.policy import RetentionPolicy

UTC = timezone.utc
NOW = datetime(2026, 3, 1, tzinfo=UTC)
ME = "123456789012"
DUE = {"maid_status": "Resource does not meet policy: deregister@2026/02/20"}


class FakeEC2:
    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail or {}

    def __getattr__(self, name):
        def call(**kwargs):
            self.calls.append((name, kwargs))
            key = (name, kwargs.get("ImageId") or kwargs.get("SnapshotId"))
            if key in self.fail:
                raise ClientError({"Error": {"Code": self.fail[key], "Message": "x"}}, name)
            return {}
        return call


def img(i, *, tags=None, snaps=(), age=90):
    return Image(image_id=f"ami-{i}", owner_id=ME, creation_date=NOW - timedelta(days=age),
                 tags=tags or {}, snapshot_ids=tuple(snaps))


def test_marks_are_batched_by_value():
    policy = RetentionPolicy()
    images = [img(i) for i in range(1203)]
    ec2 = FakeEC2()
    aws.apply_plan(ec2, decide(images, Usage(), NOW, policy, account_id=ME), policy)
    creates = [c for c in ec2.calls if c[0] == "create_tags"]
    assert [len(c[1]["Resources"]) for c in creates] == [500, 500, 203]
    assert creates[0][1]["Tags"] == [{"Key": "maid_status",
                                      "Value": "Resource does not meet policy: deregister@2026/03/08"}]


def test_unmark_deletes_only_the_mark_key():
    policy = RetentionPolicy()
    ec2 = FakeEC2()
    plan = decide([img(1, tags={**DUE, "RetainIndefinitely": "true"})], Usage(), NOW, policy, account_id=ME)
    aws.apply_plan(ec2, plan, policy)
    assert ec2.calls == [("delete_tags", {"Resources": ["ami-1"], "Tags": [{"Key": "maid_status"}]})]


@pytest.mark.parametrize("dry_run, cap", [(True, 50), (False, 1)])
def test_dry_run_and_blocked_plans_make_no_calls(dry_run, cap):
    policy = RetentionPolicy(max_deregistrations_per_run=cap)
    images = [img(1, tags=DUE), img(2, tags=DUE), img(3), img(4, tags={**DUE, "ForensicHold": "r1"})]
    plan = decide(images, Usage(), NOW, policy, account_id=ME, dry_run=dry_run)
    ec2 = FakeEC2()
    aws.apply_plan(ec2, plan, policy)
    assert ec2.calls == []


def test_deregistration_errors_by_code_and_shared_snapshot_safety():
    policy = RetentionPolicy()
    images = [img(1, tags=DUE, snaps=["snap-1", "snap-s"]), img(2, tags=DUE, snaps=["snap-s", "snap-2"]),
              img(3, tags=DUE, snaps=["snap-3"]), img(4, tags=DUE, snaps=["snap-4"])]
    plan = decide(images, Usage(), NOW, policy, account_id=ME)
    ec2 = FakeEC2(fail={("deregister_image", "ami-2"): "UnauthorizedOperation",
                        ("deregister_image", "ami-3"): "InvalidAMIID.NotFound",
                        ("delete_snapshot", "snap-4"): "InvalidSnapshot.InUse"})
    applied = aws.apply_plan(ec2, plan, policy)
    deleted = [c[1]["SnapshotId"] for c in ec2.calls if c[0] == "delete_snapshot"]
    # snap-s shared with ami-2 whose deregistration failed: kept; ami-3 was already gone: its snapshot goes
    assert "snap-s" not in deleted and "snap-2" not in deleted
    assert set(deleted) == {"snap-1", "snap-3", "snap-4"}
    assert applied["deregistered"] == 3 and applied["errors"] == ["deregister ami-2: UnauthorizedOperation"]


def test_tag_failure_is_a_typed_error():
    policy = RetentionPolicy()

    class Denied(FakeEC2):
        def create_tags(self, **kw):
            raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, "CreateTags")

    with pytest.raises(RetentionError, match="writing mark tags failed \\(UnauthorizedOperation\\)"):
        aws.apply_plan(Denied(), decide([img(1)], Usage(), NOW, policy, account_id=ME), policy)


def test_image_from_api():
    image = image_from_api({
        "ImageId": "ami-1", "OwnerId": ME, "CreationDate": "2025-12-01T10:00:00.000Z", "Name": "n",
        "Tags": [{"Key": "RetainIndefinitely", "Value": "true"}],
        "BlockDeviceMappings": [{"Ebs": {"SnapshotId": "snap-1"}}, {"VirtualName": "ephemeral0"},
                                {"Ebs": {"SnapshotId": "snap-1"}}],
    })
    assert image.creation_date == datetime(2025, 12, 1, 10, tzinfo=UTC)
    assert image.snapshot_ids == ("snap-1",) and image.tags == {"RetainIndefinitely": "true"}
    assert image_from_api({"ImageId": "ami-2", "CreationDate": "garbage"}).creation_date is None
