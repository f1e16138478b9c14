"""sandbox/aws/recycle_bin.py: rbin retention rules, deregistration and snapshot deletion into
the bin, listing, expiry by the sandbox's clock, restore (snapshots first)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from botocore.config import Config

from sandbox.aws.ageing import age_account
from tests.sandbox.conftest import code_of, no_retry_client

NO_RETRY = Config(retries={"total_max_attempts": 1})
TAG = {"ResourceTagKey": "RecycleBin", "ResourceTagValue": "ami-release"}


@pytest.fixture
def clients(sandbox):

    return no_retry_client(sandbox, "ec2"), no_retry_client(sandbox, "rbin")


def _rule(rbin, rtype, days=14, tags=(TAG,), **kw):
    return rbin.create_rule(
        ResourceType=rtype,
        RetentionPeriod={"RetentionPeriodValue": days, "RetentionPeriodUnit": "DAYS"},
        ResourceTags=list(tags),
        **kw,
    )


def _snapshot_of(ec2, image):
    return ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]


def test_rules_create_get_list_update_delete(sandbox, clients):
    _ec2, rbin = clients
    made = _rule(rbin, "EC2_IMAGE", Description="ours")
    rule_id = made["Identifier"]
    assert made["Status"] == "available" and made["RuleArn"].endswith(f":rule/{rule_id}")
    got = rbin.get_rule(Identifier=rule_id)
    assert got["ResourceTags"] == [TAG] and got["RetentionPeriod"]["RetentionPeriodValue"] == 14
    _rule(rbin, "EBS_SNAPSHOT")
    listed = rbin.list_rules(ResourceType="EC2_IMAGE")["Rules"]
    seeded = set(sandbox.account["recycle_bin_rules"])  # the account's own rules (account.yaml)
    assert [r["Identifier"] for r in listed if r["Identifier"] not in seeded] == [rule_id]
    assert rbin.list_rules(ResourceType="EC2_IMAGE", ResourceTags=[{"ResourceTagKey": "other"}])["Rules"] == []
    rbin.update_rule(Identifier=rule_id, RetentionPeriod={"RetentionPeriodValue": 30, "RetentionPeriodUnit": "DAYS"})
    assert rbin.get_rule(Identifier=rule_id)["RetentionPeriod"]["RetentionPeriodValue"] == 30
    rbin.delete_rule(Identifier=rule_id)
    assert code_of(lambda: rbin.get_rule(Identifier=rule_id)) == "ResourceNotFoundException"


def test_rule_validation(sandbox, clients):
    _ec2, rbin = clients
    # (below 1 day botocore refuses before sending: its model has the minimum, not the maximum)
    assert code_of(lambda: _rule(rbin, "EC2_IMAGE", days=3651)) == "ValidationException"
    assert (
        code_of(lambda: _rule(rbin, "EC2_IMAGE", ExcludeResourceTags=[{"ResourceTagKey": "x"}]))
        == "ValidationException"
    )


def test_list_rules_pages(sandbox, clients):
    _ec2, rbin = clients
    ids = {_rule(rbin, "EC2_IMAGE")["Identifier"] for _ in range(5)}
    first = rbin.list_rules(ResourceType="EC2_IMAGE", MaxResults=2)
    assert len(first["Rules"]) == 2 and first["NextToken"]
    seen = [
        r["Identifier"]
        for p in rbin.get_paginator("list_rules").paginate(ResourceType="EC2_IMAGE", PaginationConfig={"PageSize": 2})
        for r in p["Rules"]
    ]
    assert sorted(seen) == sorted(ids | (set(sandbox.account["recycle_bin_rules"]) & set(seen)))
    assert ids <= set(seen) and len(seen) == len(set(seen))  # every rule once, across pages


def test_without_a_matching_rule_deregistration_is_final(sandbox, clients):
    ec2, rbin = clients
    _rule(rbin, "EC2_IMAGE")
    image = sandbox.create_image("untagged", age_days=90)
    ec2.deregister_image(ImageId=image)
    assert ec2.list_images_in_recycle_bin()["Images"] == []
    assert code_of(lambda: ec2.restore_image_from_recycle_bin(ImageId=image)) == "InvalidAMIID.NotFound"


def test_image_and_snapshots_go_to_the_bin_and_come_back_snapshots_first(sandbox, clients):
    ec2, rbin = clients
    _rule(rbin, "EC2_IMAGE", days=14)
    _rule(rbin, "EC2_IMAGE", days=20, tags=[{"ResourceTagKey": "RecycleBin"}])  # key only: any value
    _rule(rbin, "EBS_SNAPSHOT", days=7)
    tags = {"RecycleBin": "ami-release", "App": "demo"}
    image = sandbox.create_image("binned", age_days=90, tags=tags)
    snap = _snapshot_of(ec2, image)
    ec2.create_tags(Resources=[snap], Tags=[{"Key": "RecycleBin", "Value": "ami-release"}])
    ec2.deregister_image(ImageId=image, DeleteAssociatedSnapshots=True)
    assert image not in {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    [binned] = ec2.list_images_in_recycle_bin(ImageIds=[image])["Images"]
    assert binned["Name"] == "binned"
    assert binned["RecycleBinExitTime"] - binned["RecycleBinEnterTime"] == timedelta(days=20)  # the longest rule
    [sbin] = ec2.list_snapshots_in_recycle_bin()["Snapshots"]
    assert sbin["SnapshotId"] == snap and sbin["RecycleBinExitTime"] - sbin["RecycleBinEnterTime"] == timedelta(days=7)
    assert code_of(lambda: ec2.restore_image_from_recycle_bin(ImageId=image)) == "IncorrectState"
    restored = ec2.restore_snapshot_from_recycle_bin(SnapshotId=snap)
    assert restored["State"] == "completed"
    assert ec2.restore_image_from_recycle_bin(ImageId=image)["Return"] is True
    [back] = ec2.describe_images(ImageIds=[image])["Images"]
    assert back["State"] == "available" and {t["Key"]: t["Value"] for t in back["Tags"]} == tags
    assert ec2.list_images_in_recycle_bin()["Images"] == []
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    assert instance["ImageId"] == image


def test_region_level_rule_with_exclusions(sandbox, clients):
    ec2, rbin = clients
    rbin.create_rule(
        ResourceType="EC2_IMAGE",
        RetentionPeriod={"RetentionPeriodValue": 3, "RetentionPeriodUnit": "DAYS"},
        ExcludeResourceTags=[{"ResourceTagKey": "NoBin", "ResourceTagValue": "yes"}],
    )
    kept = sandbox.create_image("kept", age_days=90)
    gone = sandbox.create_image("gone", age_days=90, tags={"NoBin": "yes"})
    ec2.deregister_image(ImageId=kept)
    ec2.deregister_image(ImageId=gone)
    assert [i["ImageId"] for i in ec2.list_images_in_recycle_bin()["Images"]] == [kept]


def test_the_bin_empties_when_retention_ends_by_the_sandbox_clock(sandbox, clients):
    ec2, rbin = clients
    _rule(rbin, "EC2_IMAGE", days=2)
    image = sandbox.create_image("short", age_days=90, tags={"RecycleBin": "ami-release"})
    ec2.deregister_image(ImageId=image)
    age_account(sandbox, 1)
    assert len(ec2.list_images_in_recycle_bin()["Images"]) == 1
    age_account(sandbox, 1)
    assert ec2.list_images_in_recycle_bin()["Images"] == []
    assert code_of(lambda: ec2.restore_image_from_recycle_bin(ImageId=image)) == "InvalidAMIID.NotFound"


def test_list_images_in_recycle_bin_pages(sandbox, clients):
    ec2, rbin = clients
    _rule(rbin, "EC2_IMAGE")
    images = [sandbox.create_image(f"p{i}", age_days=90, tags={"RecycleBin": "ami-release"}) for i in range(5)]
    for image in images:
        ec2.deregister_image(ImageId=image)
    pages = list(ec2.get_paginator("list_images_in_recycle_bin").paginate(PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    assert sorted(i["ImageId"] for p in pages for i in p["Images"]) == sorted(images)


def test_rbin_calls_are_counted_and_take_faults(sandbox, clients):
    _ec2, rbin = clients
    sandbox.faults.fail("rbin:ListRules", code="AccessDeniedException")
    assert code_of(lambda: rbin.list_rules(ResourceType="EC2_IMAGE")) == "AccessDeniedException"
    assert sandbox.request_counts()["rbin:ListRules"] == 1
