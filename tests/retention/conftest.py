"""Retention test helpers: the report bucket setting, a fleet of groups made by the test itself
(the seeded account's app fleet is not relied on), and the retention operator run as of now."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

LEDGER_BUCKET = "ami-release-ledger-123456789012"  # seeded by sandbox/account.yaml (buckets)


@pytest.fixture(autouse=True)
def _ledger_bucket(monkeypatch):
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", LEDGER_BUCKET)


def make_group(sb, name: str, image_id: str, *, desired: int = 0, version: str | None = None, versions=()) -> dict:
    """A launch template (v1 = image_id, then one version per extra image) and a group on it."""
    ec2 = sb.client("ec2", internal=True)
    asg = sb.client("autoscaling", internal=True)
    lt = ec2.create_launch_template(
        LaunchTemplateName=f"{name}-lt", LaunchTemplateData={"ImageId": image_id, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]
    for extra in versions:
        ec2.create_launch_template_version(
            LaunchTemplateId=lt["LaunchTemplateId"], LaunchTemplateData={"ImageId": extra, "InstanceType": "t3.micro"}
        )
    spec = {"LaunchTemplateId": lt["LaunchTemplateId"]}
    if version:
        spec["Version"] = version
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=0,
        MaxSize=max(desired, 1),
        DesiredCapacity=desired,
        LaunchTemplate=spec,
        VPCZoneIdentifier=",".join(sb.account["subnet_ids"]),
    )
    return {"template_id": lt["LaunchTemplateId"], "group": name}


def run_retention(sb, context: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """One run of the real operator as of the wall clock (the account is aged instead)."""
    from amirelease.operators.retention import AmiRetentionOperator

    op = AmiRetentionOperator(task_id="retention", region_name=sb.region, **kwargs)
    now = datetime.now(UTC)
    return op.execute(context or {"data_interval_end": now, "logical_date": now, "run_id": f"test__{now:%H%M%S%f}"})


def latest(sb, region: str | None = None) -> dict | None:
    from amirelease.retention.report import latest_report

    return latest_report(sb.client("s3", internal=True), LEDGER_BUCKET, region or sb.region)


def report_at(sb, uri: str) -> Any:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body = sb.client("s3", internal=True).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return json.loads(body) if key.endswith(".json") else body
